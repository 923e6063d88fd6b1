"""ONNX Runtime forecaster: input assembly from the feature store, whole-grid forecasts cached per init time.

No torch: inputs come from `features.windows.WindowSampler` (numpy) on a small window of the store padded
with NaN hours past its end; forcing past the store's end (no weather forecast yet) is diurnal persistence
of the last day, and responses say for how many hours. With `rolling_bands` days the P10-P90 band at the
cells with a station is rescaled from the earlier forecasts verified there (serving/bands.py). Station rows
posted to `POST /observations` live in an in-memory overlay that is applied to those windows; the latest init
time is the newest hour with any PM2.5 or O3 station value (store or overlay), so it advances without a restart.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from features.errors import DataError
from features.grid import Grid
from models.artifact import INPUT_NAMES, ModelCard
from serving.bands import RolledBands, model_band_info, roll_cube

HOUR = np.timedelta64(1, "h")
POLLUTANTS = ("pm25", "pm10", "so2", "no2", "co", "o3")


def persist_forcing(ds: xr.Dataset, period: int = 24) -> int:
    """In place: forcing hours after the last hour any forcing value exists (the store ends before the horizon:
    no weather forecast there) take the value `period` hours earlier (diurnal persistence). Gaps inside the
    record stay missing (masked, as in training). Returns the number of hours filled (0 = none needed)."""
    filled = 0
    for v in list(ds.data_vars):
        da = ds[v]
        if da.attrs.get("role") != "forcing" or not da.dims or da.dims[0] != "time":
            continue
        a = np.array(da.values, dtype=np.float32)
        have = np.isfinite(a.reshape(a.shape[0], -1)).any(axis=1)
        if not have.any() or have[-1]:
            continue
        last = int(np.flatnonzero(have)[-1])
        if last + 1 < period:
            continue  # less than a day to persist from: leave it masked
        for t in range(last + 1, a.shape[0]):
            a[t] = a[t - period]
        filled = max(filled, a.shape[0] - 1 - last)
        ds[v] = (da.dims, a, da.attrs)
    return filled


class RequestError(DataError):
    """A request the service cannot answer as asked; `status` is the HTTP code (4xx)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def parse_time(text: str, what: str = "time") -> np.datetime64:
    """ISO 8601 with an explicit offset (or Z) -> UTC datetime64[ns] on the hour."""
    try:
        ts = pd.Timestamp(text)
    except (ValueError, TypeError):
        raise RequestError(f"{what} {text!r} is not ISO 8601; write e.g. 2021-01-20T08:00:00+08:00") from None
    if ts.tzinfo is None:
        raise RequestError(f"{what} {text!r} has no UTC offset; add one, e.g. {text}+08:00 or {text}Z")
    ts = ts.tz_convert("UTC").tz_localize(None)
    if ts != ts.floor("h"):
        raise RequestError(f"{what} {text!r} is not on the hour; forecasts start on whole hours")
    return np.datetime64(ts.to_datetime64(), "ns")


def iso(t: np.datetime64 | Sequence[np.datetime64]) -> Any:
    """UTC datetime64 -> ISO 8601 string(s) with +00:00."""
    arr = np.atleast_1d(np.asarray(t, dtype="datetime64[s]")).astype(str)
    out = [s + "+00:00" for s in arr]
    return out[0] if np.ndim(t) == 0 else out


def open_store_any(store: str | Path | xr.Dataset) -> xr.Dataset:
    """The feature store as a (lazy) dataset."""
    if isinstance(store, xr.Dataset):
        return store
    path = Path(store)
    if not path.exists():
        raise DataError(f"feature store {path} not found: build it with `aqcast features build` or set AQCAST_STORE")
    try:
        from features.store import open_store
    except ImportError:  # features.store not available: plain zarr
        return xr.open_zarr(path)
    return open_store(path)


def ort_session(path: Path, threads: int | None = None) -> Any:
    """CPU InferenceSession with all graph optimisations; `threads` (default $AQCAST_ORT_THREADS or all)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = int(threads if threads is not None else os.environ.get("AQCAST_ORT_THREADS", "0"))
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def predict_tiled(session: Any, get: Callable[[slice, slice], Mapping[str, np.ndarray]], ny: int, nx: int,
                  tile: int, halo: int, out: np.ndarray | None = None) -> np.ndarray:
    """Run a fully convolutional ONNX model on (tile + 2 halo)^2 windows; `get(rows, cols)` gives inputs."""
    for r0 in range(0, ny, tile):
        for c0 in range(0, nx, tile):
            r1, c1 = min(r0 + tile, ny), min(c0 + tile, nx)
            rs, cs = slice(max(r0 - halo, 0), min(r1 + halo, ny)), slice(max(c0 - halo, 0), min(c1 + halo, nx))
            res = session.run(None, {k: np.ascontiguousarray(v) for k, v in get(rs, cs).items()})[0]
            if out is None:
                out = np.empty(res.shape[:-2] + (ny, nx), np.float32)
            out[..., r0:r1, c0:c1] = res[..., r0 - rs.start:r1 - rs.start, c0 - cs.start:c1 - cs.start]
    assert out is not None
    return out


class Forecaster:
    """Model + store + cache. Thread-safe; `forecast(init)` returns [L, 2, 3, Y, X] float32 (µg m-3)."""

    def __init__(self, artifact_dir: Path, store: str | Path | xr.Dataset, label: str = "local",
                 threads: int | None = None, cache_size: int = 4, tile: int = 128, rolling_bands: float = 0.0):
        self.card = ModelCard.read(artifact_dir)
        self.label = label
        self.grid = Grid.from_json(self.card.grid)
        self.session = ort_session(Path(artifact_dir) / self.card.onnx_file, threads)
        self.store = open_store_any(store)
        self.store_path = None if isinstance(store, xr.Dataset) else str(store)
        sgrid = Grid.from_json(self.store.attrs["grid"]) if "grid" in self.store.attrs else None
        if sgrid != self.grid:
            raise DataError(f"the feature store's grid ({sgrid}) differs from the model's ({self.grid}); "
                            "build the store on the model's grid (`aqcast features build --grid`)")
        self.cache_size, self.tile = cache_size, tile
        self.H, self.L = self.card.history, self.card.leads
        self.times = self.store["time"].values.astype("datetime64[ns]")
        self.stations = [str(s) for s in self.store["station"].values]
        self._station_idx = {s: i for i, s in enumerate(self.stations)}
        self._cache: OrderedDict[np.datetime64, np.ndarray] = OrderedDict()
        self._lock = threading.RLock()
        self.persisted_hours: dict[np.datetime64, int] = {}  # per init: future forcing hours persisted
        self._overlay: list[tuple[np.datetime64, int, str, float]] = []
        self._latest = self._store_latest()
        self.bands = (RolledBands(rolling_bands, self.L, list(self.card.species)) if rolling_bands > 0 else None)
        self.band_info: dict[np.datetime64, dict[str, Any]] = {}  # per init: how its P10/P90 band was made
        self.lon2d, self.lat2d = self.grid.centres_lonlat()
        self.cell_ids = self.grid.cell_ids()

    # ---- times ----------------------------------------------------------------------------------------
    def _store_latest(self) -> np.datetime64:
        have = np.zeros(self.times.size, bool)
        for p in ("pm25", "o3"):
            if f"stn_{p}" in self.store:
                have |= np.isfinite(np.asarray(self.store[f"stn_{p}"].values, float)).any(axis=1)
        if not have.any():
            raise DataError("the feature store holds no PM2.5/O3 station values: nothing to start a forecast from")
        return self.times[np.flatnonzero(have)[-1]]

    @property
    def latest_init(self) -> np.datetime64:
        """Newest hour with a PM2.5 or O3 station value (store or posted observations)."""
        return self._latest

    @property
    def earliest_init(self) -> np.datetime64:
        """First init time with a full history window in the store."""
        return self.times[0] + (self.H - 1) * HOUR

    def check_init(self, init: np.datetime64) -> np.datetime64:
        """Validate a requested init time."""
        if init > self._latest or init < self.earliest_init:
            raise RequestError(f"init_time {iso(init)} is not available; choose an hour between "
                               f"{iso(self.earliest_init)} and {iso(self._latest)} (or leave it out for the latest)")
        return init

    # ---- inputs ---------------------------------------------------------------------------------------
    def window(self, init: np.datetime64, extra_history: int = 0) -> xr.Dataset:
        """Store hours init-H+1-extra_history .. init+L (NaN-padded past the store's end) with posted
        observations applied."""
        times = init + np.arange(-(self.H - 1) - extra_history, self.L + 1) * HOUR
        ds = self.store.sel(time=slice(times[0], times[-1]))
        fill = {v: 0 for v in ds.data_vars if v.startswith("qc_")}
        ds = ds.reindex(time=times, fill_value=fill | {v: np.nan for v in ds.data_vars if v not in fill}).load()
        rows = [r for r in self._overlay if times[0] <= r[0] <= times[-1]]
        if rows:
            ti = {t: i for i, t in enumerate(times)}
            srow, scol = self.store["station_row"].values, self.store["station_col"].values
            arrays = {}
            for t, s, p, v in rows:
                for name, idx in ((f"stn_{p}", (ti[t], s)), (f"qc_{p}", (ti[t], s)),
                                  (f"obs_{p}", (ti[t], srow[s], scol[s]))):
                    if name in ds:
                        arr = arrays.setdefault(name, np.array(ds[name].values))
                        arr[idx] = 0 if name.startswith("qc_") else v
            for name, arr in arrays.items():
                ds[name] = (ds[name].dims, arr, ds[name].attrs)
        return ds

    def assemble(self, init: np.datetime64) -> dict[str, np.ndarray]:
        """Model inputs (batch 1) for `init`, built by WindowSampler on the window; forcing the store does not
        have yet (no weather forecast past its end) is persisted from the last day (`persisted_hours`)."""
        return self._sample(init)[0]

    def _sample(self, init: np.datetime64, record: bool = True):
        """(inputs, station observations over the leads [L, 2, S] (NaN where missing), station rows, cols)."""
        from features.windows import WindowSampler

        ch = self.card.channels
        win = self.window(init, extra_history=24)  # a day more, to persist from when the forcing ends early
        filled = persist_forcing(win)
        if record:
            self.persisted_hours[init] = filled
        win = win.isel(time=slice(24, None))
        sampler = WindowSampler(win, [init], history=self.H, leads=self.L,
                                obs_vars=list(ch["obs"]), forcing_vars=list(ch["forcing"]),
                                static_vars=list(ch.get("static", [])))
        s = sampler[0]
        inputs = {n: np.ascontiguousarray(np.asarray(s[n], np.float32)[None]) for n in INPUT_NAMES}
        obs = np.where(s["target_mask"] > 0, s["target"], np.nan)
        return inputs, obs, sampler.station_row.astype(int), sampler.station_col.astype(int)

    def _issue_earlier(self, init: np.datetime64) -> tuple[np.ndarray, np.ndarray]:
        """An earlier init's forecast at the stations' cells and what they measured (for the rolled band)."""
        inputs, obs, rows, cols = self._sample(init, record=False)
        return self.predict(inputs)[0][..., rows, cols], obs

    def predict(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Raw model output [B, L, 2, 3, Y, X]; tiled when the grid is larger than one tile."""
        ny, nx = inputs["obs"].shape[-2:]
        if not self.card.dynamic_spatial or (ny <= self.tile and nx <= self.tile):
            return self.session.run(None, {k: inputs[k] for k in INPUT_NAMES})[0]
        halo = self.card.receptive_field_cells or 64
        return predict_tiled(self.session, lambda r, c: {k: v[..., r, c] for k, v in inputs.items()},
                             ny, nx, self.tile, halo)

    # ---- forecasts -------------------------------------------------------------------------------------
    def forecast(self, init: np.datetime64 | None = None) -> tuple[np.datetime64, np.ndarray]:
        """(init, [L, 2, 3, Y, X]) for `init` (default latest), computed once per init and cached."""
        init = self._latest if init is None else self.check_init(init)
        with self._lock:
            if init in self._cache:
                self._cache.move_to_end(init)
                return init, self._cache[init]
        inputs, obs, rows, cols = self._sample(init)
        cube = self.predict(inputs)[0]
        info = model_band_info()
        if self.bands is not None:
            self.bands.remember(init, cube[..., rows, cols], obs)
            k, info = self.bands.factors(init, self.earliest_init, self._issue_earlier)
            cube = roll_cube(cube, k, rows, cols)
        cube.setflags(write=False)
        with self._lock:
            self.band_info[init] = info
            self._cache[init] = cube
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return init, cube

    def is_cached(self, init: np.datetime64 | None) -> bool:
        """Whether the forecast for `init` (None = latest) is in the cache."""
        return (self._latest if init is None else init) in self._cache

    def cached_inits(self) -> list[str]:
        """ISO init times in the cache."""
        with self._lock:
            return [iso(t) for t in self._cache]

    def add_observations(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Apply station rows; invalidate affected cached forecasts; return the new latest init time."""
        now = np.datetime64(pd.Timestamp.now(tz="UTC").tz_localize(None).floor("h").to_datetime64(), "ns")
        parsed, problems = [], []
        for k, r in enumerate(rows):
            try:
                t = parse_time(str(r["time"]), f"rows[{k}].time")
            except RequestError as ex:
                problems.append(str(ex))
                continue
            s = self._station_idx.get(str(r["station"]))
            if s is None:
                problems.append(f"rows[{k}].station {r['station']!r} is unknown; known: {', '.join(self.stations)}")
            elif t < self.times[0] or t > now + HOUR:
                problems.append(f"rows[{k}].time {iso(t)} is before the store ({iso(self.times[0])}) or in the future")
            vals = {p: float(r[p]) for p in POLLUTANTS if r.get(p) is not None}
            if not vals:
                problems.append(f"rows[{k}] has no pollutant value; give at least one of {', '.join(POLLUTANTS)}")
            if s is not None and vals:
                parsed += [(t, s, p, v) for p, v in vals.items()]
        if problems:
            raise RequestError("; ".join(problems[:20]) + (f" (+{len(problems) - 20} more)" if len(problems) > 20
                                                           else ""))
        ts = [p[0] for p in parsed]
        with self._lock:
            self._overlay.extend(parsed)
            if any(p[2] in ("pm25", "o3") for p in parsed):
                self._latest = max(self._latest, max(t for t, _, p, _ in parsed if p in ("pm25", "o3")))
            lo, hi = min(ts), max(ts) + (self.H - 1) * HOUR
            for init in [i for i in self._cache if lo <= i <= hi or (self.bands is not None and i >= lo)]:
                del self._cache[init]  # inputs changed, or (rolled band) the verified forecasts before it
            if self.bands is not None:
                self.bands.forget(min(ts) - self.L * HOUR, hi)
        return {"accepted_rows": len(rows), "values": len(parsed), "latest_init_time": iso(self._latest)}

    # ---- selection --------------------------------------------------------------------------------------
    def select_points(self, lons: Sequence[float], lats: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols) of the cells containing the points; RequestError if any is outside the grid."""
        try:
            r, c = self.grid.lonlat_to_rowcol(np.asarray(lons, float), np.asarray(lats, float))
        except DataError as ex:
            raise RequestError(f"{ex}; pick points inside the grid (GET /grid)") from None
        return np.atleast_1d(r), np.atleast_1d(c)

    def select_cells(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols) of cell ids."""
        rc, bad = [], []
        for cid in ids:
            try:
                rc.append(self.grid.cell_id_to_rowcol(cid))
            except DataError as ex:
                bad.append(str(ex))
        if bad:
            raise RequestError("; ".join(bad[:10]) + "; list valid ids with GET /grid or query by points")
        a = np.array(rc, np.int64).reshape(-1, 2)
        return a[:, 0], a[:, 1]

    def select_bbox(self, bbox: Sequence[float], max_cells: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols) of cells whose centres lie in [west, south, east, north]."""
        w, s, e, n = bbox
        inside = (self.lon2d >= w) & (self.lon2d <= e) & (self.lat2d >= s) & (self.lat2d <= n)
        count = int(inside.sum())
        if count == 0:
            (lo0, lo1), (la0, la1) = self.grid.bounds_lonlat()
            raise RequestError(f"bbox {list(bbox)} contains no cell centre; the grid covers lon {lo0:.3f}..{lo1:.3f}, "
                               f"lat {la0:.3f}..{la1:.3f}")
        if count > max_cells:
            raise RequestError(f"bbox covers {count} cells, more than {max_cells} allowed for this format; shrink "
                               "it, ask for fewer cells, or use format=netcdf", status=413)
        r, c = np.nonzero(inside)
        return r, c

    def grid_info(self) -> dict[str, Any]:
        """GET /grid body."""
        (lo0, lo1), (la0, la1) = self.grid.bounds_lonlat()
        centre_bbox = [float(self.lon2d.min()), float(self.lat2d.min()), float(self.lon2d.max()),
                       float(self.lat2d.max())]
        info: dict[str, Any] = {"grid": self.grid.model_dump(), "crs": self.grid.crs, "ny": self.grid.ny,
                                "nx": self.grid.nx, "n_cells": self.grid.ny * self.grid.nx,
                                "res_m": self.grid.res_m, "bbox": centre_bbox,
                                "bounds": [lo0, la0, lo1, la1], "cell_id_format": "{res_m}m_{i}_{j}",
                                "cell_id_first": self.cell_ids[0, 0], "cell_id_last": self.cell_ids[-1, -1]}
        return info
