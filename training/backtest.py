"""Backtest: forecasts at arbitrary points for a sequence of init times, as CSV (the evaluation contract).

    aqcast backtest --model URI --data DIR --from 2016-03-01T00:00+08:00 --to 2017-02-25T00:00+08:00
                    --every 24h --points points.csv --out forecasts.csv [--met-error]

DIR: raw data in the `../shared/data/beijing` layout (any stations and dates). points.csv: `point_id,lon,lat`
(points may lie where no station is; points and stations outside the model's grid grow it by whole cells,
`training.domain`, up to 150 km; farther is an error). Output columns:
`init_time` (ISO 8601 with the offset of --from, e.g. +08:00), `lead_hours` (1..L), `point_id`,
`species` (pm25|o3), `p10`, `p50`, `p90` (ug m-3). At each init only pollutant observations up to and
including that hour enter the model (WindowSampler); meteorology over the horizon is the observed weather
(perfect forecast) unless `--met-error` adds a lead-growing forecast error (`training.evaluate.add_met_error`).
Hours outside the data are masked, never invented.
"""
from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.errors import DataError, MissingInputError, Problem
from features.store import store_grid
from training.domain import build_store_for, grid_for_points, grid_from_meta
from training.evaluate import (
    init_times,
    load_model,
    make_sampler,
    parse_every,
    parse_time,
    run_model,
    station_obs,
)

SPECIES = ("pm25", "o3")
COLUMNS = ["init_time", "lead_hours", "point_id", "species", "p10", "p50", "p90"]


def read_points(path: str | Path) -> tuple[list[str], np.ndarray, np.ndarray, list[int]]:
    """points.csv -> (ids, lon, lat, line numbers); every bad line is reported (DataError)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(Problem("points file not found", file=str(path)))
    df = pd.read_csv(path, dtype={"point_id": str}, encoding="utf-8-sig")  # a spreadsheet's byte-order mark too
    df.columns = [c.strip() for c in df.columns]
    miss = [c for c in ("point_id", "lon", "lat") if c not in df.columns]
    if miss:
        raise MissingInputError(Problem(f"missing column(s) {miss}; expected point_id,lon,lat", file=str(path)))
    problems: list[Problem] = []
    ids, lons, lats, lines = [], [], [], []
    for k, r in df.iterrows():
        try:
            lon, lat = float(r["lon"]), float(r["lat"])
            if not (np.isfinite(lon) and np.isfinite(lat)):
                raise ValueError("not a number")
        except (TypeError, ValueError):
            problems.append(Problem(f"lon/lat not numeric: {r['lon']!r}, {r['lat']!r}", str(path), int(k) + 2))
            continue
        if abs(lat) > 90 or abs(lon) > 180:
            problems.append(Problem(f"lon {lon}, lat {lat} is not a place (lat within ±90, lon within ±180; "
                                    "columns swapped?)", str(path), int(k) + 2))
            continue
        ids.append(str(r["point_id"]))
        lons.append(lon), lats.append(lat), lines.append(int(k) + 2)
    if len(set(ids)) != len(ids):
        problems.append(Problem("duplicate point_id values", str(path), column="point_id"))
    if not ids and not problems:
        problems.append(Problem("no points", str(path)))
    if problems:
        raise DataError(problems)
    return ids, np.array(lons), np.array(lats), lines


def place_points(path: str | Path, points: tuple, grid: Any) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the points on `grid`; a point outside it is an error naming its line."""
    ids, lon, lat, lines = points
    rows, cols, inside = grid.cells(lon, lat)  # one projection for the check and the cells
    if not inside.all():
        raise DataError([Problem(f"point {ids[k]!r} at lon {lon[k]}, lat {lat[k]} lies outside the model grid "
                                 f"({grid.nx} x {grid.ny} cells); the model cannot forecast there", str(path),
                                 lines[k]) for k in np.flatnonzero(~inside)])
    return rows.astype(np.int64), cols.astype(np.int64)


def format_rows(inits: np.ndarray, fc: np.ndarray, ids: list[str], offset: str) -> pd.DataFrame:
    """fc [N, L, 2, 3, P] -> long table with COLUMNS; init_time shown in `offset`."""
    n, n_l, n_sp, _, n_p = fc.shape
    loc = pd.to_datetime(inits).tz_localize("UTC").tz_convert(_tz(offset))
    iso = np.array([t.isoformat(timespec="minutes") for t in loc])
    grid = np.meshgrid(np.arange(n), np.arange(n_l), np.arange(n_p), np.arange(n_sp), indexing="ij")
    i, ld, p, s = (g.ravel() for g in grid)
    q = fc[i, ld, s, :, p]
    return pd.DataFrame({"init_time": iso[i], "lead_hours": ld + 1, "point_id": np.array(ids)[p],
                         "species": np.array(SPECIES)[s], "p10": np.round(q[:, 0], 2),
                         "p50": np.round(q[:, 1], 2), "p90": np.round(q[:, 2], 2)})[COLUMNS]


def _tz(offset: str):
    from datetime import timedelta, timezone

    sign = -1 if offset.startswith("-") else 1
    hh, mm = offset.lstrip("+-").split(":")
    return timezone(sign * timedelta(hours=int(hh), minutes=int(mm)))


def run_backtest(model: Any, meta: dict[str, Any], data_dir: str | Path, t_from: str, t_to: str,
                 every: str | int, points: str | Path, out: str | Path, met_error: bool = False, seed: int = 0,
                 batch_size: int = 16, store=None, chunk: int = 32,
                 echo: Callable[[str], None] | None = None, rolling_bands: float = 0.0) -> pd.DataFrame:
    """Run the backtest and write `out` (CSV). `store`: an already-built store on the model grid (tests).
    `rolling_bands` > 0: at points in a station's cell, each init's P10/P90 band rescaled from the forecasts at
    the data's stations verified in that many days before it (`models.rolling_bands`; observations up to the
    init only), the forecasts issued before --from on the same cadence included where the data allow them (so a
    run's rows do not depend on where it starts); points without a station keep the model's band.
    Progress: a bar on a terminal, else one `echo` line per chunk of inits (logs and CI see it move)."""
    t0, offset = parse_time(t_from, "--from")
    t1, _ = parse_time(t_to, "--to")
    inits = init_times(t0, t1, parse_every(every))
    ids, lon, lat, lines = read_points(points)
    parts = [(lambda: store, np.arange(len(ids)))] if store is not None else \
        _stores(meta, data_dir, ids, lon, lat, echo)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fc = np.zeros((inits.size, int(meta["leads"]), len(SPECIES), 3, len(ids)), np.float32)  # rounds as before
    from tqdm.auto import tqdm

    bar = tqdm(total=int(inits.size) * len(parts), unit="init", desc="backtest", disable=None)
    for k, (build, idx) in enumerate(parts):  # one store in memory at a time
        ds = build()
        rows, cols = place_points(points, ([ids[i] for i in idx], lon[idx], lat[idx], [lines[i] for i in idx]),
                                  store_grid(ds))
        tmin, tmax = ds["time"].values[0], ds["time"].values[-1]
        if inits[-1] < tmin or inits[0] > tmax:
            raise DataError(f"no data for init times {inits[0]} .. {inits[-1]} UTC; the data cover {tmin} .. {tmax}")
        for note in edge_notes(inits, tmin, tmax, int(meta["history"]), int(meta["leads"]), offset) \
                if echo and k == 0 else []:
            echo(note)
        verified = _Verified(rolling_bands)
        if rolling_bands > 0:  # the window at --from holds the forecasts the data allow before it, as a service's
            warm = verified.warm_up(model, meta, ds, inits[0], parse_every(every), batch_size, met_error, seed,
                                    chunk)
            if echo and warm:
                where = (" (points on the model grid)", " (points off it)")[k] if len(parts) > 1 else ""
                echo(f"rolled band: {warm} forecasts issued before --from verified first{where}")
        for c0 in range(0, inits.size, chunk):  # chunks bound memory ([N, L, 2, 3, Y, X] per chunk)
            part = inits[c0:c0 + chunk]
            sampler, _ = make_sampler(ds, part, meta, model)
            grid_fc = run_model(model, sampler, batch_size, met_error, seed + c0, sampler.forcing_vars)
            fc[c0:c0 + part.size, ..., idx] = verified.rescale(part, grid_fc, sampler, rows, cols)
            bar.update(int(part.size))
            if echo and bar.disable:
                echo(f"backtest: {c0 + part.size}/{inits.size} inits" + (f" ({k + 1}/{len(parts)})"
                                                                          if len(parts) > 1 else ""))
        del ds
    bar.close()
    df = format_rows(inits, fc, ids, offset)
    df.to_csv(out, index=False, quoting=csv.QUOTE_MINIMAL, float_format="%.2f")
    return df


def _stores(meta: dict[str, Any], data_dir: str | Path, ids: list[str], lon: np.ndarray, lat: np.ndarray,
            echo: Callable[[str], None] | None) -> list[tuple[Callable[[], Any], np.ndarray]]:
    """[(store builder, point indices)]: the model's grid for the points on it; for the others the grid grown to
    cover them (`training.domain`), checked before anything is built."""
    say = echo or (lambda m: None)
    inside = grid_from_meta(meta).contains(lon, lat)
    off = np.flatnonzero(~inside)
    grown = grid_for_points(meta, [ids[k] for k in off], lon[off], lat[off]) if off.size else None
    parts: list[tuple[Callable[[], Any], np.ndarray]] = []
    if inside.any():
        def on_model() -> Any:
            say(f"building the inputs from {data_dir} on the model grid")
            return build_store_for(data_dir, meta, echo=say)

        parts.append((on_model, np.flatnonzero(inside)))
    if grown is not None:
        def on_grown() -> Any:
            say(grown[1])
            return build_store_for(data_dir, meta, grown[0], echo=say)

        parts.append((on_grown, off))
    return parts


def edge_notes(inits: np.ndarray, tmin: np.datetime64, tmax: np.datetime64, history: int, leads: int,
               offset: str) -> list[str]:
    """Warnings for inits whose history window starts before the data or whose horizon ends after them (those
    hours are masked, as in training, never invented)."""
    hour = np.timedelta64(1, "h")
    notes = []
    short = inits[inits - (history - 1) * hour < tmin]
    if short.size:
        notes.append(f"warning: {short.size} init(s) from {_local(short[0], offset)} have less than the model's "
                     f"{history}-h history in the data (they start {_local(tmin, offset)}); those forecasts use "
                     "the hours there are")
    late = inits[inits + leads * hour > tmax]
    if late.size:
        notes.append(f"warning: {late.size} init(s) from {_local(late[0], offset)} reach past the data's last hour "
                     f"({_local(tmax, offset)}); the weather after it is missing there (masked)")
    return notes


def _local(t: np.datetime64, offset: str) -> str:
    return pd.Timestamp(t).tz_localize("UTC").tz_convert(_tz(offset)).isoformat(timespec="minutes")


class _Verified:
    """The trailing window of forecasts at the stations, for rescaling each init's band (off at window 0)."""

    def __init__(self, window_days: float):
        self.window_days = window_days
        self.t: np.ndarray | None = None
        self.z: np.ndarray | None = None

    def warm_up(self, model: Any, meta: dict[str, Any], ds, first: np.datetime64, every_h: int, batch_size: int,
                met_error: bool, seed: int, chunk: int) -> int:
        """Record the forecasts issued on the run's cadence before its first init whose valid times reach into the
        window there, where the data hold a full history for them; returns how many."""
        from models.rolling_bands import earlier_inits

        earliest = ds["time"].values[0] + (int(meta["history"]) - 1) * np.timedelta64(1, "h")
        warm = earlier_inits(first, every_h, self.window_days, int(meta["leads"]), earliest).astype(first.dtype)
        for c0 in range(0, warm.size, chunk):
            part = warm[c0:c0 + chunk]
            sampler, _ = make_sampler(ds, part, meta, model)
            fc = run_model(model, sampler, batch_size, met_error, seed + 1_000_003 + c0, sampler.forcing_vars)
            self._keep(part, self._z(fc, sampler))
        return int(warm.size)

    def rescale(self, inits: np.ndarray, fc: np.ndarray, sampler, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """fc [N, L, 2, 3, Y, X] at the points (rows, cols), the band rescaled when the window is on."""
        if self.window_days <= 0:
            return fc[..., rows, cols]
        from models.rolling_bands import apply_factors, band_factors

        z = self._z(fc, sampler)
        k = band_factors(inits, z, self.t, self.z, window_days=self.window_days)
        self._keep(inits, z)
        r, c = sampler.station_row.astype(int), sampler.station_col.astype(int)
        at_station = np.isin(rows * fc.shape[-1] + cols, r * fc.shape[-1] + c)  # points in a station's cell
        return apply_factors(fc[..., rows, cols], k, where=at_station)

    @staticmethod
    def _z(fc: np.ndarray, sampler) -> np.ndarray:
        from models.rolling_bands import band_z

        r, c = sampler.station_row.astype(int), sampler.station_col.astype(int)
        return band_z(np.moveaxis(fc[..., r, c], 3, -1), station_obs(sampler))

    def _keep(self, inits: np.ndarray, z: np.ndarray) -> None:
        keep_from = inits[-1] - np.timedelta64(round((self.window_days + 4) * 24), "h")
        t = inits if self.t is None else np.concatenate([self.t, inits])
        zz = z if self.z is None else np.concatenate([self.z, z])
        self.t, self.z = t[t >= keep_from], zz[t >= keep_from]


def backtest_command(model_uri: str, data_dir: str, t_from: str, t_to: str, every: str, points: str, out: str,
                     met_error: bool = False, seed: int = 0, batch_size: int = 16,
                     echo: Callable[[str], None] | None = None, rolling_bands: float = 0.0) -> pd.DataFrame:
    """CLI body: load the model by URI, then `run_backtest`."""
    import torch

    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    model, meta = load_model(model_uri)
    return run_backtest(model, meta, data_dir, t_from, t_to, every, points, out, met_error, seed, batch_size,
                        echo=echo, rolling_bands=rolling_bands)
