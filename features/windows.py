"""Training/evaluation windows from a feature store: a numpy-only map-style dataset (see docs/architecture.md).

Item `i` for init time t holds observed history t-H+1 .. t (station values scattered into their cells from
the *input* stations only, satellite fields), known forcings t-H+1 .. t+L, static fields, and pollutant targets
at the target stations for valid times t+1 .. t+L. No pollutant value after t ever enters `obs`.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from features.calendar import (
    CALENDAR_VARS,
    COMPUTED_VARS,
    DEFAULT_UTC_OFFSET,
    calendar_features,
    solar_cos_zenith,
)
from features.errors import DataError
from features.grid import Grid
from features.regrid import distance_to_nearest_km

POLLUTANTS: tuple[str, ...] = ("pm25", "pm10", "so2", "no2", "co", "o3")
TARGETS: tuple[str, ...] = ("pm25", "o3")
MET_ORDER: tuple[str, ...] = ("t2m", "d2m", "sp", "tp", "u10", "v10", "ws", "rh", "blh", "ssr")
EMIS_ORDER: tuple[str, ...] = ("nox", "so2", "voc", "nh3", "pm25")
HOUR = np.timedelta64(3600 * 10**9, "ns")
# static channels computed per sample, never stored: km from each cell centre to the nearest station whose
# values enter this sample's inputs (after drop-out), so a withheld or absent station's cell reads as one without
INPUT_DISTANCE = "input_distance_km"
COMPUTED_STATICS: tuple[str, ...] = (INPUT_DISTANCE,)
COMPUTED_CHANNELS: tuple[str, ...] = COMPUTED_VARS + COMPUTED_STATICS  # every channel no store holds


def _as_store(store: xr.Dataset | str | Path) -> xr.Dataset:
    if isinstance(store, xr.Dataset):
        return store
    from features.store import open_store

    return open_store(store)


def _to_ns(t: Any) -> np.datetime64:
    ts = pd.Timestamp(t)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return np.datetime64(ts.value, "ns")


def default_obs_vars(store: xr.Dataset) -> list[str]:
    """`obs_<p>` for every pollutant with station data, then satellite fields present."""
    out = [f"obs_{p}" for p in POLLUTANTS if f"stn_{p}" in store]
    return out + [v for v in ("sat_aod", "sat_no2col") if v in store]


def default_forcing_vars(store: xr.Dataset) -> list[str]:
    """`met_*` (canonical order), then `emis_*`, then the calendar features (independent of store order)."""
    met = [f"met_{v}" for v in MET_ORDER if f"met_{v}" in store]
    emis = [f"emis_{s}" for s in EMIS_ORDER if f"emis_{s}" in store]
    other = sorted(str(v) for v in store.data_vars if str(v).startswith(("met_", "emis_"))
                   and str(v) not in met + emis)
    return met + emis + other + list(CALENDAR_VARS)


def default_static_vars(store: xr.Dataset) -> list[str]:
    """Variables with role `static`, sorted by name (static_elevation, station_distance_km)."""
    return sorted(str(v) for v in store.data_vars if store[v].attrs.get("role") == "static")


def valid_init_times(store: xr.Dataset | str | Path, start: Any = None, end: Any = None, every_h: int = 1,
                     history: int = 24, leads: int = 72) -> np.ndarray:
    """Init times in [start, end] whose whole window (t-history+1 .. t+leads) lies inside the store.

    With `every_h` > 1 only hours divisible by it (UTC hour count since 1970) are kept, e.g. 24 -> 00 UTC.
    """
    ds = _as_store(store)
    times = np.asarray(ds["time"].values, dtype="datetime64[ns]")
    if times.size == 0:
        return times
    lo = times[0] + (history - 1) * HOUR
    hi = times[-1] - leads * HOUR
    if start is not None:
        lo = max(lo, _to_ns(start))
    if end is not None:
        hi = min(hi, _to_ns(end))
    cand = times[(times >= lo) & (times <= hi)]
    if every_h > 1:
        cand = cand[(cand.astype(np.int64) // (3600 * 10**9)) % every_h == 0]
    return cand


def sample_coords(init_time: Any, leads: int = 72) -> dict[str, np.ndarray]:
    """init_time (datetime64[ns]), lead_time (int hours 1..leads), valid_time (datetime64[ns], [leads])."""
    t0 = np.datetime64(int(init_time), "ns") if isinstance(init_time, (int, np.integer)) else _to_ns(init_time)
    lead = np.arange(1, leads + 1, dtype=np.int64)
    return {"init_time": t0, "lead_time": lead, "valid_time": t0 + lead * HOUR}


class WindowSampler:
    """Map-style dataset of forecast windows; arrays are loaded into memory once and sliced per item."""

    def __init__(self, store: xr.Dataset | str | Path, init_times: Any, history: int = 24, leads: int = 72,
                 obs_vars: Sequence[str] | None = None, forcing_vars: Sequence[str] | None = None,
                 static_vars: Sequence[str] | None = None, input_stations: Sequence[str] | None = None,
                 target_stations: Sequence[str] | None = None, drop_prob: float = 0.0, seed: int = 0,
                 aux_targets: Sequence[str] = ()):
        ds = _as_store(store)
        self.history, self.leads = int(history), int(leads)
        self.drop_prob, self.seed, self.epoch = float(drop_prob), int(seed), 0
        times = np.asarray(ds["time"].values, dtype="datetime64[ns]")
        if times.size > 1 and not (np.diff(times) == HOUR).all():
            raise DataError("store time axis is not continuous hourly")
        self.times = times
        self.utc_offset = str(ds.attrs.get("source_utc_offset", DEFAULT_UTC_OFFSET))
        self.ny, self.nx = int(ds.sizes["y"]), int(ds.sizes["x"])
        self._init_index = self._index_inits(init_times)

        stations = [str(s) for s in ds["station"].values]
        pos = {s: k for k, s in enumerate(stations)}
        self.input_stations = self._pick(stations, input_stations, pos, "input_stations")
        self.target_stations = self._pick(stations, target_stations, pos, "target_stations")
        in_idx = np.array([pos[s] for s in self.input_stations], dtype=np.int64)
        tg_idx = np.array([pos[s] for s in self.target_stations], dtype=np.int64)
        rows = np.asarray(ds["station_row"].values, dtype=np.int64)
        cols = np.asarray(ds["station_col"].values, dtype=np.int64)
        self._in_cells = rows[in_idx] * self.nx + cols[in_idx]

        self.obs_vars = list(default_obs_vars(ds) if obs_vars is None else obs_vars)
        self.forcing_vars = list(default_forcing_vars(ds) if forcing_vars is None else forcing_vars)
        self.static_vars = list(default_static_vars(ds) if static_vars is None else static_vars)
        need = [v for v in self.obs_vars + self.forcing_vars + self.static_vars
                if v not in COMPUTED_CHANNELS and self._station_var(v) is None and v not in ds]
        if need:
            raise DataError(f"store has no variable(s) {need}; it has {sorted(map(str, ds.data_vars))}")

        # observed channels: ('stn', [T, S_in] values with NaN where missing/flagged) or ('grid', [T, Y, X])
        self._obs: list[tuple[str, np.ndarray]] = []
        for v in self.obs_vars:
            p = self._station_var(v)
            if p is not None:
                self._obs.append(("stn", self._station_values(ds, p)[:, in_idx]))
            else:
                self._obs.append(("grid", np.asarray(ds[v].values, dtype=np.float32)))
        self._forcing = [None if v in COMPUTED_VARS else np.asarray(ds[v].values, dtype=np.float32)
                         for v in self.forcing_vars]
        self._forcing_has_nan = [a is not None and bool(np.isnan(a).any()) for a in self._forcing]
        lon_c, lat_c = self._domain_centre(ds)
        self._calendar = np.concatenate([calendar_features(times, self.utc_offset),
                                         solar_cos_zenith(times, lon_c, lat_c)[:, None]], axis=1)
        self._cal_col = {v: k for k, v in enumerate(COMPUTED_VARS)}
        st = [np.zeros((self.ny, self.nx), np.float32) if v in COMPUTED_STATICS
              else np.asarray(ds[v].values, dtype=np.float32) for v in self.static_vars]
        self._static = np.nan_to_num(np.stack(st) if st else np.zeros((0, self.ny, self.nx), np.float32))
        self._dist_col = self.static_vars.index(INPUT_DISTANCE) if INPUT_DISTANCE in self.static_vars else None
        self._in_dist = self._input_distances(ds, in_idx) if self._dist_col is not None else None
        missing_t = [p for p in TARGETS if f"stn_{p}" not in ds]
        if missing_t:
            raise DataError(f"store lacks target variable(s) {['stn_' + p for p in missing_t]}")
        self._target = np.stack([self._station_values(ds, p)[:, tg_idx] for p in TARGETS], axis=1)  # [T,2,S]
        # other pollutants at the target stations over the horizon: targets of auxiliary heads (multi-task), never
        # inputs ("aux_target"/"aux_mask", [L, n_aux, S]; absent without `aux_targets`)
        self._aux = (np.stack([self._station_values(ds, p)[:, tg_idx] for p in aux_targets], axis=1)
                     if aux_targets else None)
        self.station_row = rows[tg_idx].astype(np.int32)
        self.station_col = cols[tg_idx].astype(np.int32)
        self._target_in_input = np.isin(tg_idx, in_idx)
        self.station_withheld = (~self._target_in_input).astype(np.float32)

    # ---- helpers ------------------------------------------------------------------------------------
    def _index_inits(self, init_times: Any) -> np.ndarray:
        inits = np.asarray([_to_ns(t) for t in np.atleast_1d(init_times)], dtype="datetime64[ns]")
        if self.times.size == 0:
            raise DataError("store has an empty time axis")
        idx = (inits - self.times[0]) // HOUR
        ok = ((inits - self.times[0]) % HOUR == np.timedelta64(0, "ns")) & (idx - self.history + 1 >= 0) & (
            idx + self.leads <= self.times.size - 1)
        if not ok.all():
            bad = inits[~ok][0]
            raise DataError(f"init time {bad} has no complete window (history {self.history} h, leads "
                            f"{self.leads} h) inside the store {self.times[0]} .. {self.times[-1]}; "
                            "use features.windows.valid_init_times")
        return idx.astype(np.int64)

    @staticmethod
    def _domain_centre(ds: xr.Dataset) -> tuple[float, float]:
        """(lon, lat) of the grid's centre for the solar-geometry forcing (mean of the cell centres)."""
        if "lon" in ds.coords and "lat" in ds.coords:
            return float(np.nanmean(ds["lon"].values)), float(np.nanmean(ds["lat"].values))
        return float(np.nanmean(ds["station_lon"].values)), float(np.nanmean(ds["station_lat"].values))

    def _input_distances(self, ds: xr.Dataset, in_idx: np.ndarray) -> np.ndarray:
        """[S_in, Y, X] km from each cell centre to each input station (exact coordinates)."""
        if "grid" not in ds.attrs or "station_lon" not in ds or "station_lat" not in ds:
            raise DataError("input_distance_km needs the store's grid attr and station_lon / station_lat")
        g = Grid.from_json(ds.attrs["grid"])
        lon, lat = ds["station_lon"].values[in_idx], ds["station_lat"].values[in_idx]
        if not in_idx.size:  # no input station: as far as the grid reaches
            return np.full((1, self.ny, self.nx), np.hypot(self.ny, self.nx) * g.res_m / 1000, np.float32)
        return np.stack([distance_to_nearest_km(g, [lo], [la]) for lo, la in zip(lon, lat)])

    @staticmethod
    def _pick(stations: list[str], chosen: Sequence[str] | None, pos: dict, what: str) -> list[str]:
        if chosen is None:
            return list(stations)
        unknown = [s for s in chosen if str(s) not in pos]
        if unknown:
            raise DataError(f"{what}: unknown station(s) {unknown}; the store has {stations}")
        return [str(s) for s in chosen]

    @staticmethod
    def _station_var(v: str) -> str | None:
        """Pollutant name if `v` is a station-scatter channel (obs_<p>, stn_<p> or <p>), else None."""
        p = v.split("_", 1)[1] if v.startswith(("obs_", "stn_")) else v
        return p if p in POLLUTANTS else None

    @staticmethod
    def _station_values(ds: xr.Dataset, p: str) -> np.ndarray:
        if f"stn_{p}" not in ds:
            raise DataError(f"store has no station variable stn_{p}")
        v = np.array(ds[f"stn_{p}"].transpose("time", "station").values, dtype=np.float32)
        if f"qc_{p}" in ds:
            v[np.asarray(ds[f"qc_{p}"].transpose("time", "station").values) != 0] = np.nan
        return v

    # ---- dataset protocol ---------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Change the drop-out draw (seeded by seed + epoch + index)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(self._init_index.size)

    @property
    def init_times(self) -> np.ndarray:
        """The sampler's init times (datetime64[ns])."""
        return self.times[self._init_index]

    def coords(self, i: int) -> dict[str, np.ndarray]:
        """init_time / lead_time / valid_time labels of item `i`."""
        return sample_coords(self.times[self._init_index[i]], self.leads)

    def _kept_inputs(self, i: int) -> np.ndarray:
        n = self._in_cells.size
        if self.drop_prob <= 0 or n == 0:
            return np.ones(n, dtype=bool)
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        keep = rng.random(n) >= self.drop_prob
        if not keep.any():  # keep at least one input station
            keep[rng.integers(n)] = True
        return keep

    def _shapes(self) -> dict[str, tuple[tuple[int, ...], Any]]:
        """Per-item array shapes and dtypes (the keys of an item)."""
        H, L, Y, X, S = self.history, self.leads, self.ny, self.nx, self.station_row.size
        f32 = np.float32
        return {"obs": ((H, len(self._obs), Y, X), f32), "obs_mask": ((H, len(self._obs), Y, X), f32),
                "forcing": ((H + L, len(self._forcing), Y, X), f32),
                "forcing_mask": ((H + L, len(self._forcing), Y, X), f32), "static": (self._static.shape, f32),
                "target": ((L, len(TARGETS), S), f32), "target_mask": ((L, len(TARGETS), S), f32),
                "station_row": ((S,), np.int32), "station_col": ((S,), np.int32),
                "station_in_input": ((S,), f32), "station_withheld": ((S,), f32), "init_time": ((), np.int64),
                **({} if self._aux is None else {"aux_target": ((L, self._aux.shape[1], S), f32),
                                                 "aux_mask": ((L, self._aux.shape[1], S), f32)})}

    def _alloc(self, n: int | None) -> dict[str, np.ndarray]:
        lead = () if n is None else (n,)
        return {k: np.zeros(lead + shape, dtype) for k, (shape, dtype) in self._shapes().items()}

    def __getitem__(self, i: int) -> dict[str, Any]:
        out = self._alloc(None)
        out["init_time"] = self._fill(i, out)
        return out

    def __getitems__(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        """A whole batch, written straight into [B, ...] arrays (no per-item copies to stack); use with
        a collate_fn that only wraps the arrays (training.datamodule.collate_batch)."""
        out = self._alloc(len(indices))
        for j, i in enumerate(indices):
            out["init_time"][j] = self._fill(i, {k: v[j] for k, v in out.items()})
        return out

    def _fill(self, i: int, out: dict[str, np.ndarray]) -> np.int64:
        """Write item `i`'s arrays into the zeroed arrays `out` (views); return its init time (ns)."""
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i = int(i) % len(self)
        t = int(self._init_index[i])
        H, L, Y, X = self.history, self.leads, self.ny, self.nx
        h0 = t - H + 1
        keep = self._kept_inputs(i)
        cells = self._in_cells[keep]
        unique = np.unique(cells).size == cells.size

        obs = out["obs"].reshape(H, len(self._obs), Y * X)
        obs_mask = out["obs_mask"].reshape(H, len(self._obs), Y * X)
        for c, (kind, arr) in enumerate(self._obs):
            if kind == "grid":
                block = arr[h0:t + 1].reshape(H, Y * X)
                ok = np.isfinite(block)
                obs[:, c] = np.where(ok, block, 0.0)
                obs_mask[:, c] = ok
                continue
            vals = arr[h0:t + 1][:, keep]
            ok = np.isfinite(vals)
            if unique:
                obs[:, c, cells] = np.where(ok, vals, 0.0)
                obs_mask[:, c, cells] = ok
            else:  # mean of the stations sharing a cell
                cnt = np.zeros((H, Y * X), np.float32)
                np.add.at(obs[:, c], (slice(None), cells), np.where(ok, vals, 0.0))
                np.add.at(cnt, (slice(None), cells), ok.astype(np.float32))
                obs[:, c] = np.divide(obs[:, c], cnt, out=np.zeros_like(cnt), where=cnt > 0)
                obs_mask[:, c] = cnt > 0

        forcing, forcing_mask = out["forcing"], out["forcing_mask"]
        forcing_mask[...] = 1.0
        for c, arr in enumerate(self._forcing):
            if arr is None:
                forcing[:, c] = self._calendar[h0:t + L + 1, self._cal_col[self.forcing_vars[c]], None, None]
                continue
            block = arr[h0:t + L + 1]
            if not self._forcing_has_nan[c]:
                forcing[:, c] = block
                continue
            ok = np.isfinite(block)
            np.copyto(forcing[:, c], block, where=ok)  # stays 0 where missing
            forcing_mask[:, c] = ok

        tgt = self._target[t + 1:t + L + 1]
        tmask = np.isfinite(tgt)
        in_input = self._target_in_input.copy()
        if not keep.all():
            dropped = set(np.asarray(self.input_stations)[~keep])
            in_input &= ~np.isin(self.target_stations, list(dropped))
        np.copyto(out["target"], tgt, where=tmask)
        out["target_mask"][...] = tmask
        if self._aux is not None:
            aux = self._aux[t + 1:t + L + 1]
            amask = np.isfinite(aux)
            np.copyto(out["aux_target"], aux, where=amask)
            out["aux_mask"][...] = amask
        out["static"][...] = self._static
        if self._in_dist is not None:
            out["static"][self._dist_col] = self._in_dist[keep].min(axis=0) if keep.size else self._in_dist[0]
        out["station_row"][...] = self.station_row
        out["station_col"][...] = self.station_col
        out["station_in_input"][...] = in_input
        out["station_withheld"][...] = self.station_withheld
        return np.int64(self.times[t].astype(np.int64))

