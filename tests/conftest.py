"""Shared fixtures: a tiny feature store that follows the contract in docs/architecture.md exactly.

`tiny_store` (session-scoped, in memory) and `tiny_store_path` (the same store written as zarr) are built with
plain numpy/xarray plus `features.grid.Grid`; they do not use the readers. Keep the contents stable: other
packages' tests rely on them (variables may be added, never renamed or removed).

Contents: 16 x 16 grid of 3 km cells near Beijing, 4 stations in distinct cells, 2021-01-01 .. 2021-01-20
hourly UTC (480 h), pm25/o3 with a diurnal cycle plus noise and ~5 % gaps, all six pollutants, ten met
fields (labelled as IDW-derived), satellite AOD with gaps (no2col listed as missing), five emission fields,
static elevation. Training period: the first 14 days.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from features.grid import Grid

TINY_POLLUTANTS = ("pm25", "pm10", "so2", "no2", "co", "o3")
TINY_MET = ("t2m", "d2m", "sp", "tp", "u10", "v10", "ws", "rh", "blh", "ssr")
TINY_EMIS = ("nox", "so2", "voc", "nh3", "pm25")
TINY_CALENDAR = ("hour_sin", "hour_cos", "doy_sin", "doy_cos", "weekend")
UNITS = {"pm25": "ug m-3", "pm10": "ug m-3", "so2": "ug m-3", "no2": "ug m-3", "co": "ug m-3", "o3": "ug m-3",
         "t2m": "degC", "d2m": "degC", "sp": "hPa", "tp": "mm h-1", "u10": "m s-1", "v10": "m s-1",
         "ws": "m s-1", "rh": "%", "blh": "m", "ssr": "W m-2", "aod": "1", "no2col": "umol m-2"}


def make_tiny_store(n_days: int = 20, seed: int = 0) -> xr.Dataset:
    """Build the tiny contract-conforming store (deterministic for a given seed)."""
    rng = np.random.default_rng(seed)
    grid = Grid(lon_0=116.0, lat_0=40.0, res_m=3000, x0=12000.0, y0=-21000.0, nx=16, ny=16)
    time = pd.date_range("2021-01-01", periods=24 * n_days, freq="h").values.astype("datetime64[ns]")
    nt, ny, nx = time.size, grid.ny, grid.nx
    stations = np.array(["Alpha", "Bravo", "Charlie", "Delta"])
    rows, cols = np.array([4, 5, 11, 12], np.int32), np.array([4, 10, 6, 12], np.int32)
    s_lon, s_lat = grid.unproject(grid.x[cols] + 400.0, grid.y[rows] - 300.0)
    lon2d, lat2d = grid.centres_lonlat()
    local_h = (np.arange(nt) + 8) % 24
    f32 = np.float32

    ds = xr.Dataset(coords={
        "time": ("time", time, {"timezone": "UTC"}), "y": ("y", grid.y, {"units": "m"}),
        "x": ("x", grid.x, {"units": "m"}), "lon": (("y", "x"), lon2d), "lat": (("y", "x"), lat2d),
        "station": ("station", stations), "station_lon": ("station", s_lon), "station_lat": ("station", s_lat),
        "station_row": ("station", rows), "station_col": ("station", cols)})
    roles: dict[str, str] = {}

    def add(name: str, dims: tuple, data: np.ndarray, role: str, units: str, **extra: str) -> None:
        arr = data.astype(np.uint8 if role == "qc" else f32)
        ds[name] = (dims, arr, {"units": units, "role": role, **extra})
        roles[name] = role

    # stations: diurnal cycles + AR(1) noise, gaps
    diurnal = np.sin(2 * np.pi * (local_h - 14) / 24)
    noise = np.cumsum(rng.normal(0, 3, (nt, 4)), axis=0) * 0.3
    base = {"pm25": 45 - 20 * diurnal[:, None] + 10 * np.arange(4) + noise,
            "o3": 50 + 35 * diurnal[:, None] - 3 * np.arange(4) + 0.5 * noise}
    base["pm10"] = 1.5 * base["pm25"] + rng.normal(0, 5, (nt, 4))
    base["so2"] = 8 + 0.1 * base["pm25"] + rng.normal(0, 1, (nt, 4))
    base["no2"] = 40 - 10 * diurnal[:, None] + rng.normal(0, 4, (nt, 4))
    base["co"] = 800 + 8 * base["pm25"] + rng.normal(0, 50, (nt, 4))
    stn = {}
    for p in TINY_POLLUTANTS:
        v = np.maximum(base[p], 1.0)
        v[rng.random((nt, 4)) < 0.05] = np.nan
        v[100:110, 2] = np.nan  # a 10 h gap at Charlie
        stn[p] = v
        qc = np.zeros((nt, 4), np.uint8)
        qc[[50, 51], [1, 1]] = 2  # two SPIKE flags at Bravo
        add(f"stn_{p}", ("time", "station"), v, "target" if p in ("pm25", "o3") else "observed", UNITS[p])
        add(f"qc_{p}", ("time", "station"), qc, "qc", "1", flag_meanings="1 STUCK 2 SPIKE 4 NEGATIVE "
            "8 IMPOSSIBLE 16 LONG_GAP")
        grid_v = np.full((nt, ny, nx), np.nan)
        grid_v[:, rows, cols] = v
        add(f"obs_{p}", ("time", "y", "x"), grid_v, "observed", UNITS[p])
    yy, xx = np.meshgrid(grid.y, grid.x, indexing="ij")
    dist = np.min(np.hypot(yy[..., None] - grid.y[rows], xx[..., None] - grid.x[cols]), axis=-1) / 1000
    add("station_distance_km", ("y", "x"), dist, "static", "km")

    # meteorology: smooth fields with a diurnal cycle and a west-east gradient
    gx = np.linspace(-1, 1, nx)[None, None, :]
    gy = np.linspace(-1, 1, ny)[None, :, None]
    d3 = diurnal[:, None, None]
    met = {"t2m": -2 + 6 * d3 + gx, "d2m": -12 + 2 * d3 + 0.5 * gy, "sp": 1020 - 5 * gy + 0 * d3,
           "tp": np.where(rng.random((nt, 1, 1)) < 0.05, 0.8, 0.0) + 0 * gx + 0 * gy,
           "u10": 2 + d3 + gy, "v10": -1 + 0.5 * gx + 0 * d3, "blh": 600 + 500 * d3 + 50 * gx + 0 * gy,
           "ssr": np.maximum(0, 400 * d3) + 0 * gx + 0 * gy}
    met["ws"] = np.hypot(met["u10"], met["v10"])
    met["rh"] = np.clip(100 * np.exp(17.625 * met["d2m"] / (243.04 + met["d2m"]) - 17.625 * met["t2m"]
                                    / (243.04 + met["t2m"])), 0, 100)
    for v in TINY_MET:
        add(f"met_{v}", ("time", "y", "x"), np.broadcast_to(met[v], (nt, ny, nx)), "forcing", UNITS[v],
            derived="interpolated from stations (IDW)")

    # satellite AOD: one overpass a day (05 UTC), clouds as NaN
    aod = np.full((nt, ny, nx), np.nan)
    passes = np.flatnonzero((np.arange(nt) % 24) == 5)
    aod[passes] = 0.3 + 0.2 * rng.random((passes.size, ny, nx))
    aod[passes[::3], :8, :] = np.nan
    add("sat_aod", ("time", "y", "x"), aod, "observed", "1", derived="satellite.nc")
    add("sat_aod_valid", ("time", "y", "x"), np.where(np.isfinite(aod), 1.0, 0.0), "mask", "1")

    # emissions: annual map x hour-of-day profile
    emap = np.exp(-((yy - grid.y[8]) ** 2 + (xx - grid.x[8]) ** 2) / (2 * 15000.0**2))
    prof = 1 + 0.5 * np.sin(2 * np.pi * (local_h - 6) / 24)
    for k, s in enumerate(TINY_EMIS):
        add(f"emis_{s}", ("time", "y", "x"), (k + 1) * prof[:, None, None] * emap[None], "forcing",
            "kg km-2 h-1", derived="emission totals x station-density proxy x default profiles")
    add("static_elevation", ("y", "x"), 40 + 300 * np.clip(gy[0] + 0.3, 0, None) + 0 * xx, "static", "m")

    train = (pd.Timestamp(time[0]), pd.Timestamp(time[0]) + pd.Timedelta(days=14) - pd.Timedelta(hours=1))
    sel = ds.sel(time=slice(*train))
    stats: dict[str, dict[str, float]] = {}
    for name, role in roles.items():
        if role in ("qc", "mask"):
            continue
        a = sel[name].values.astype(np.float64)
        stats[name] = {"mean": float(np.nanmean(a)), "std": float(np.nanstd(a)) or 1.0}
        pollutant = name.split("_", 1)[-1] in TINY_POLLUTANTS and name.split("_", 1)[0] in ("stn", "obs")
        if pollutant or (role == "forcing" and np.nanmin(a) >= 0):  # log stats for never-negative forcings, as the store
            lg = np.log1p(np.maximum(a, 0))
            stats[name].update(mean_log1p=float(np.nanmean(lg)), std_log1p=float(np.nanstd(lg)) or 1.0)
    for c in TINY_CALENDAR:
        stats[c] = {"mean": 0.0, "std": 1.0}
    qc_summary = {s: {"SPIKE": 2 * len(TINY_POLLUTANTS)} if s == "Bravo" else {} for s in stations}
    ds.attrs = {
        "title": "aqcast feature store (tiny test fixture)", "store_version": "4", "timezone": "UTC",
        "source_utc_offset": "+08:00", "grid": grid.to_json(), "roles": json.dumps(roles),
        "norm_stats": json.dumps(stats),
        "train_period": json.dumps([train[0].isoformat() + "+00:00", train[1].isoformat() + "+00:00"]),
        "missing": json.dumps(["sat_no2col", "sat_no2col_valid"]),
        "missing_reasons": json.dumps({v: "not in satellite.nc" for v in ("sat_no2col", "sat_no2col_valid")}),
        "qc_summary": json.dumps(qc_summary),
        "provenance": json.dumps({"sources": [{"path": "tests/conftest.py", "sha256": "0" * 64}],
                                  "code_version": "test", "created": "2021-01-21T00:00:00+00:00",
                                  "command": "tests/conftest.py::make_tiny_store"}),
    }
    return ds


@pytest.fixture(scope="session")
def tiny_store() -> xr.Dataset:
    """In-memory contract-conforming feature store (do not modify it in tests: use `.copy(deep=True)`)."""
    return make_tiny_store()


@pytest.fixture(scope="session")
def tiny_store_path(tiny_store: xr.Dataset, tmp_path_factory: pytest.TempPathFactory):
    """The tiny store written as zarr (path to the store directory)."""
    path = tmp_path_factory.mktemp("tiny_store") / "store.zarr"
    ds = tiny_store.copy()
    enc = {v: {"chunks": tuple(min(s, 24 * 30) if d == "time" else s for d, s in zip(ds[v].dims, ds[v].shape))}
           for v in ds.data_vars}
    ds.to_zarr(path, mode="w", encoding=enc, consolidated=True, zarr_format=2)
    return path


TINY_RAW_STATIONS = {"Alpha": (116.30, 39.92), "Bravo": (116.45, 39.95), "Charlie": (116.35, 40.10)}


def write_uci_dir(path, n_days: int = 40, start: str = "2021-01-01", seed: int = 1,
                  stations: dict[str, tuple[float, float]] | None = None, scale_after: str | None = None,
                  factor: float = 1.0):
    """Write a small raw data directory in the UCI layout (local time +08:00) + stations.csv.

    With `scale_after` (local ISO time), pollutant values from then on are multiplied by `factor` (used to show
    that normalisation ignores the test period). Returns the directory path.
    """
    from pathlib import Path

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    stations = stations or TINY_RAW_STATIONS
    rng = np.random.default_rng(seed)
    local = pd.date_range(start, periods=24 * n_days, freq="h")
    end = local[-1]
    diurnal = np.sin(2 * np.pi * (local.hour.to_numpy() - 14) / 24)
    rows_tbl = []
    for k, (name, (lon, lat)) in enumerate(stations.items()):
        n = local.size
        pm25 = np.maximum(1, 50 - 20 * diurnal + 5 * k + rng.normal(0, 8, n))
        cols = {"PM2.5": pm25, "PM10": pm25 * 1.4 + 5, "SO2": 5 + rng.random(n) * 5,
                "NO2": 30 + 10 * rng.random(n), "CO": 700 + 100 * rng.random(n),
                "O3": np.maximum(1, 50 + 30 * diurnal + rng.normal(0, 5, n))}
        if scale_after is not None:
            late = local >= pd.Timestamp(scale_after)
            cols = {c: np.where(late, v * factor, v) for c, v in cols.items()}
        df = pd.DataFrame({"No": np.arange(1, n + 1), "year": local.year, "month": local.month,
                           "day": local.day, "hour": local.hour, **{c: np.round(v, 1) for c, v in cols.items()},
                           "TEMP": np.round(2 + 5 * diurnal + k, 1), "PRES": np.round(1020 - k + 0 * diurnal, 1),
                           "DEWP": np.round(-10 + 2 * diurnal, 1), "RAIN": 0.0,
                           "wd": np.array(["N", "NE", "E", "SW"])[np.arange(n) % 4], "WSPM": 2.0,
                           "station": name})
        df.loc[rng.random(n) < 0.03, "PM2.5"] = np.nan
        tag = f"{local[0]:%Y%m%d}-{end:%Y%m%d}"
        df.to_csv(path / f"PRSA_Data_{name}_{tag}.csv", index=False, na_rep="")
        rows_tbl.append({"station": name, "code": f"{k}A", "lon": lon, "lat": lat})
    pd.DataFrame(rows_tbl).to_csv(path / "stations.csv", index=False)
    return path


@pytest.fixture(scope="session")
def tiny_raw_dir(tmp_path_factory: pytest.TempPathFactory):
    """A 40-day, 3-station raw data directory in the UCI layout (no NetCDF inputs)."""
    return write_uci_dir(tmp_path_factory.mktemp("raw") / "data")


def load_script(name: str):
    """A script of docs/scorecard/ imported as a module (its `main` not run)."""
    path = Path(__file__).resolve().parents[1] / "docs" / "scorecard" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tiny_module(store: Path, *overrides: str):
    """(AQModule, its fitted AQDataModule) of configs/tiny.yaml with `overrides` on the store at `store`
    (weights seeded with 0)."""
    import json

    import torch

    from training.config import load_config
    from training.datamodule import AQDataModule
    from training.module import AQModule

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml", list(overrides))
    dm = AQDataModule(cfg, store)
    dm.setup("fit")
    torch.manual_seed(0)
    return AQModule(cfg, dm.channels, json.loads(dm.ds.attrs["norm_stats"])), dm
