"""The gridded feature store: one zarr store labelled by time, with variable roles, training-period
normalisation statistics and provenance (layout: docs/architecture.md, "Feature store").

Public API: build_store(...), open_store(path), write_store(ds, path), store_meta(ds), store_grid(ds),
fit_norm_stats(ds, train_period), default_train_period(times).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from features.calendar import CALENDAR_VARS
from features.errors import DataError, MissingInputError, Problem
from features.grid import Grid

POLLUTANTS: tuple[str, ...] = ("pm25", "pm10", "so2", "no2", "co", "o3")
TARGETS: tuple[str, ...] = ("pm25", "o3")
MET_VARS: tuple[str, ...] = ("t2m", "d2m", "sp", "tp", "u10", "v10", "ws", "rh", "blh", "ssr")
SAT_VARS: tuple[str, ...] = ("aod", "no2col")
ROLES = ("target", "observed", "forcing", "static", "truth", "qc", "mask")
REQUIRED_ATTRS = ("grid", "roles", "norm_stats", "train_period", "provenance")
JSON_ATTRS = ("grid", "roles", "norm_stats", "train_period", "provenance", "qc_summary", "missing",
              "qc_summary_by_variable", "coverage", "missing_reasons", "weather_clock",
              "dropped_stations")
TIME_CHUNK = 24 * 30
STORE_VERSION = "4"  # 2: log1p statistics for every never-negative variable (models.config log_forcings);
                     # 3: station weather realigned to the first year's clock (features.clock, attrs weather_clock)
                     # 4: that clock's phases kept (weather_clock.reference_phases, a model's reference, M54)
DEFAULT_HOLDOUT_DAYS = 365


# ---- small helpers ---------------------------------------------------------------------------------------
def to_utc_naive(t: Any) -> pd.Timestamp:
    """ISO string / Timestamp / datetime64 -> tz-naive UTC Timestamp (naive input is taken as UTC)."""
    try:
        ts = pd.Timestamp(t)
    except (ValueError, TypeError) as e:
        raise DataError(f"cannot parse time {t!r}: {e}; use ISO 8601, e.g. 2015-03-01T00:00+08:00") from None
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts


def _iso(ts: pd.Timestamp) -> str:
    return pd.Timestamp(ts).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def code_version() -> str:
    """`git describe --always --dirty` of the package's repository, else the installed package version."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=root, check=False,
                             capture_output=True, text=True, timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            return "git:" + out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from importlib.metadata import version

        return "aqcast " + version("aqcast")
    except Exception:  # noqa: BLE001 - not installed
        return "unknown"


def default_train_period(times: np.ndarray) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Everything except the final 365 days; if that leaves < 50 % of the record, the first 70 %."""
    t0, t1 = pd.Timestamp(times[0]), pd.Timestamp(times[-1])
    end = t1 - pd.Timedelta(days=DEFAULT_HOLDOUT_DAYS)
    if end - t0 < 0.5 * (t1 - t0):
        end = (t0 + 0.7 * (t1 - t0)).floor("h")
    return t0, end


def resolve_train_period(times: np.ndarray, train_period: Any) -> tuple[pd.Timestamp, pd.Timestamp]:
    """None -> default; a single time -> (start of record, that time); a pair -> (start, end)."""
    if train_period is None:
        start, end = default_train_period(times)
    elif isinstance(train_period, (tuple, list)):
        start, end = (to_utc_naive(t) for t in train_period)
    else:
        start, end = pd.Timestamp(times[0]), to_utc_naive(train_period)
    if start < pd.Timestamp(times[0]) or start > pd.Timestamp(times[-1]):
        start = max(start, pd.Timestamp(times[0]))
    if end <= start or start > pd.Timestamp(times[-1]):
        raise DataError(f"training period {_iso(start)} .. {_iso(end)} is empty or outside the data "
                        f"({_iso(pd.Timestamp(times[0]))} .. {_iso(pd.Timestamp(times[-1]))})")
    return start, min(end, pd.Timestamp(times[-1]))


def fit_norm_stats(ds: xr.Dataset, train_period: tuple[Any, Any]) -> dict[str, dict[str, float]]:
    """{var: {mean, std}} over the training period for every input/target/static/truth variable.

    Pollutants (stn_/obs_/truth_<p>) and every other variable that is never negative in the training period
    (precipitation, wind speed: models may normalise them in log1p space) also get `mean_log1p`, `std_log1p`.
    Calendar features: mean 0, std 1.
    A zero or undefined std is stored as 1.
    """
    start, end = (to_utc_naive(t) for t in train_period)
    sel = ds.sel(time=slice(start, end))
    stats: dict[str, dict[str, float]] = {}
    for name in ds.data_vars:
        role = ds[name].attrs.get("role")
        if role not in ("target", "observed", "forcing", "static", "truth"):
            continue
        a = np.asarray((sel if "time" in ds[name].dims else ds)[name].values).ravel()
        ok = np.isfinite(a)
        a = a[ok] if not ok.all() else a
        mean = float(a.mean(dtype=np.float64)) if a.size else 0.0
        std = float(a.std(dtype=np.float64)) if a.size else 1.0
        stats[str(name)] = {"mean": mean, "std": std if std > 0 else 1.0}
        prefix, _, p = str(name).partition("_")
        if (p in POLLUTANTS and prefix in ("stn", "obs", "truth")) or (a.size and a.min() >= 0):
            lg = np.log1p(np.maximum(a, 0))
            sl = float(lg.std(dtype=np.float64)) if a.size else 1.0
            stats[str(name)].update(mean_log1p=float(lg.mean(dtype=np.float64)) if a.size else 0.0,
                                    std_log1p=sl if sl > 0 else 1.0)
    for c in CALENDAR_VARS:
        stats[c] = {"mean": 0.0, "std": 1.0}
    return stats


def coverage(ds: xr.Dataset) -> dict[str, float]:
    """% non-missing per input/target variable; `obs_*` over the cells that hold a station."""
    rows, cols = ds["station_row"].values, ds["station_col"].values
    out = {}
    for v in ds.data_vars:
        if ds[v].attrs.get("role") in ("qc", "mask"):
            continue
        a = ds[v].values
        if str(v).startswith("obs_"):
            a = a[:, rows, cols]
        out[str(v)] = round(float(100.0 * np.isfinite(a).mean()), 2) if a.size else 0.0
    return out


# ---- reading / writing -----------------------------------------------------------------------------------
def write_store(ds: xr.Dataset, path: str | Path) -> None:
    """Write a store as consolidated zarr (format 2), chunked along time (`TIME_CHUNK` hours)."""
    enc = {}
    for v in ds.data_vars:
        chunks = tuple(min(n, TIME_CHUNK) if d == "time" else n for d, n in zip(ds[v].dims, ds[v].shape))
        enc[v] = {"chunks": chunks}
    ds.to_zarr(Path(path), mode="w", encoding=enc, consolidated=True, zarr_format=2)


def store_meta(ds: xr.Dataset) -> dict[str, Any]:
    """The store's JSON attrs parsed: grid, roles, norm_stats, train_period, provenance, missing, qc_summary."""
    out: dict[str, Any] = {}
    for k in JSON_ATTRS:
        if k in ds.attrs:
            v = ds.attrs[k]
            out[k] = json.loads(v) if isinstance(v, str) else v
    return out


def store_grid(ds: xr.Dataset) -> Grid:
    """The store's `Grid`."""
    return Grid.from_json(ds.attrs["grid"])


def open_store(path: str | Path) -> xr.Dataset:
    """Open a feature store lazily (arrays load on access) and validate its layout; clear `DataError`s."""
    p = Path(path)
    if not p.exists():
        raise MissingInputError(Problem("no feature store here; build one with `aqcast features build "
                                        "--data DIR --out STORE`", file=str(p)))
    if not (p / ".zmetadata").exists() and not (p / "zarr.json").exists() and not (p / ".zgroup").exists():
        raise DataError(Problem("not a zarr feature store (no .zmetadata/.zgroup/zarr.json)", file=str(p)))
    try:
        ds = xr.open_zarr(p, chunks=None, consolidated=None)
    except Exception as e:  # noqa: BLE001 - zarr raises many types
        raise DataError(Problem(f"cannot open as zarr: {e}", file=str(p))) from None
    validate_store(ds, str(p))
    return ds


def validate_store(ds: xr.Dataset, where: str = "store") -> None:
    """Check dims, required attrs, roles and target variables; raise one DataError listing every problem."""
    probs = [f"missing dimension {d!r}" for d in ("time", "y", "x", "station") if d not in ds.dims]
    probs += [f"missing attribute {a!r}" for a in REQUIRED_ATTRS if a not in ds.attrs]
    try:
        meta = store_meta(ds)
    except (json.JSONDecodeError, TypeError) as e:
        probs.append(f"an attribute is not valid JSON: {e}")
        meta = {}
    roles = meta.get("roles", {})
    probs += [f"roles lists {v!r} but the store has no such variable" for v in roles if v not in ds]
    probs += [f"role of {v!r} is {r!r}, expected one of {ROLES}" for v, r in roles.items() if r not in ROLES]
    probs += [f"target variable stn_{p} missing" for p in TARGETS if f"stn_{p}" not in ds]
    if "grid" in meta:
        try:
            Grid.from_json(meta["grid"])
        except Exception as e:  # noqa: BLE001 - pydantic errors
            probs.append(f"attribute 'grid' is not a valid grid: {e}")
    if probs:
        raise DataError([Problem(m, file=where) for m in probs])


# ---- building --------------------------------------------------------------------------------------------
def build_store(data_dir: str | Path, out: str | Path | None, res_km: float = 3.0, grid: Grid | None = None,
                train_period: Any = None, elevation: str | Path | None = None,
                emission_totals: str | Path | None = None, progress: bool = True, margin_km: float = 15.0,
                command: str | None = None,
                emission_proxy_points: tuple[list[float], list[float]] | None = None,
                weather_clock: str = "auto", emission_proxy_grid: Grid | None = None,
                outside_stations: str = "error", weather_clock_reference: dict | None = None) -> xr.Dataset:
    """Read `data_dir`, put everything on the grid and write the store to `out` (skip writing if None).

    Optional inputs (meteorology.nc, satellite.nc, emissions.nc or emission totals, static.nc or the elevation
    npy, truth.nc) that are absent become entries of attrs `missing`; meteorology then comes from the
    stations by IDW. `train_period`: None (default: all but the final 365 days), an end time, or (start, end).
    `emission_proxy_points` (lons, lats): the points whose density spreads national emission totals over the
    grid (default: this directory's stations; a model's inputs pin its training stations, so a new station
    set does not move the emissions; `emission_proxy_grid`: the grid over which that density has mean 1, a
    model's training grid when `grid` grows around it, so its cells keep their values). `weather_clock`: 'auto'
    realigns station weather months that run whole hours off the reference clock, 'off' only reports them
    (`features.clock`; attrs `weather_clock`); the reference is the record's first year, or
    `weather_clock_reference` (a model's training record's phases, so a later year alone is judged by them).
    `outside_stations`: a station off a given `grid` is an error ('error'), or left out ('drop', listed with
    the reason in attrs `dropped_stations`).
    """
    from features import store_build

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise MissingInputError(Problem("data directory not found", file=str(data_dir)))
    steps = store_build.STEPS
    bar = _progress(len(steps), progress)
    try:
        ctx = store_build.Context(data_dir=data_dir, res_km=res_km, grid=grid, margin_km=margin_km,
                                  elevation=elevation, emission_totals=emission_totals,
                                  emission_proxy_points=emission_proxy_points, weather_clock=weather_clock,
                                  emission_proxy_grid=emission_proxy_grid, outside_stations=outside_stations,
                                  weather_clock_reference=weather_clock_reference)
        for name, fn in steps:
            bar(name)
            fn(ctx)
        ds = ctx.ds
        start, end = resolve_train_period(ds["time"].values, train_period)
        bar("normalisation statistics")
        roles = {str(v): ds[v].attrs["role"] for v in ds.data_vars}
        ds.attrs.update({
            "title": "aqcast feature store", "store_version": STORE_VERSION, "timezone": "UTC",
            "source_utc_offset": ctx.utc_offset, "grid": ctx.grid.to_json(), "roles": json.dumps(roles),
            "norm_stats": json.dumps(fit_norm_stats(ds, (start, end))),
            "train_period": json.dumps([_iso(start), _iso(end)]),
            "train_period_rule": "given" if train_period is not None else
            f"default: all but the final {DEFAULT_HOLDOUT_DAYS} days (first 70 % if the record is short)",
            "coverage": json.dumps(coverage(ds)),
            "missing": json.dumps(sorted(ctx.missing)), "missing_reasons": json.dumps(ctx.missing),
            "qc_summary": json.dumps(ctx.qc_summary), "weather_clock": json.dumps(ctx.clock_report),
            "qc_summary_by_variable": json.dumps(ctx.qc_by_var), "dropped_stations": json.dumps(ctx.dropped),
            "provenance": json.dumps({
                "sources": ctx.sources, "code_version": code_version(),
                "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00"),
                "command": command or f"build_store({str(data_dir)!r}, res_km={res_km})"}),
        })
        if out is not None:
            bar("writing zarr")
            write_store(ds, out)
        bar(None)
        return ds
    finally:
        bar.close()  # type: ignore[attr-defined]


def _progress(n: int, enabled: bool) -> Callable[[str | None], None]:
    """A step-wise progress callback (tqdm on stderr) with a `.close()`."""
    if not enabled:
        def step(_: str | None) -> None:
            return None
        step.close = lambda: None  # type: ignore[attr-defined]
        return step
    from tqdm import tqdm

    bar = tqdm(total=n + 3, desc="features build", unit="step", leave=False)
    state = {"first": True}

    def step(name: str | None) -> None:
        if not state["first"]:
            bar.update(1)
        state["first"] = False
        if name:
            bar.set_postfix_str(name)
    step.close = bar.close  # type: ignore[attr-defined]
    return step
