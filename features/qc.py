"""Data-quality flags for station datasets; values are never altered or dropped.

Public API:
    STUCK, SPIKE, NEGATIVE, IMPOSSIBLE, LONG_GAP: int   bit values (1, 2, 4, 8, 16)
    QCConfig                                            thresholds (dataclass, all configurable)
    flag(ds, config=None, **overrides) -> xr.Dataset    `qc_<var>(station, time)` uint8 bitmasks
    qc_summary(flags, by_variable=False) -> pandas.DataFrame   station x flag counts (+ n_values)

Rules (per station and variable):
- STUCK: the same non-missing value for >= `stuck_hours` consecutive hours. Runs at or below a floor are
  ignored: zero rain/wind, rh at 100 % (fog), and pollutant readings at or below
  max(`detection_limit[var]`, the station's `floor_quantile` value) — long clean-air runs at the
  instrument's resolution (SO2 = 2, CO = 200) are normal, not faults.
- SPIKE: a point far from the centred rolling median (> `spike_k` robust sigmas, 1.4826*MAD, with a floor)
  that also jumps away from both neighbouring hours by > `spike_k`/2 sigmas. Pollutants are tested in log1p
  and must also differ from the median by > `spike_min_abs` (µg m-3), so low-level noise is not a spike.
- NEGATIVE: < 0 for quantities that cannot be negative.
- IMPOSSIBLE: outside physical bounds (e.g. O3 > 1000 µg m-3), or PM2.5 > PM10 * (1 + rel) + abs
  (flags both pm25 and pm10), or dew point above temperature by more than 1 degC (flags d2m).
- LONG_GAP: the missing hours of a gap of >= `gap_hours` consecutive hours.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr

STUCK, SPIKE, NEGATIVE, IMPOSSIBLE, LONG_GAP = 1, 2, 4, 8, 16
FLAG_NAMES = {STUCK: "STUCK", SPIKE: "SPIKE", NEGATIVE: "NEGATIVE", IMPOSSIBLE: "IMPOSSIBLE", LONG_GAP: "LONG_GAP"}
POLLUTANTS = ("pm25", "pm10", "so2", "no2", "co", "o3")
NON_NEGATIVE = (*POLLUTANTS, "sp", "tp", "ws", "rh", "blh", "ssr", "aod")


def _default_bounds() -> dict[str, tuple[float, float]]:
    return {"pm25": (-np.inf, 2000.0), "pm10": (-np.inf, 5000.0), "so2": (-np.inf, 3000.0),
            "no2": (-np.inf, 1000.0), "co": (-np.inf, 50000.0), "o3": (-np.inf, 1000.0),
            "t2m": (-70.0, 60.0), "d2m": (-90.0, 45.0), "sp": (300.0, 1100.0), "tp": (-np.inf, 200.0),
            "ws": (-np.inf, 75.0), "u10": (-75.0, 75.0), "v10": (-75.0, 75.0), "rh": (-np.inf, 100.0)}


def _default_detection_limit() -> dict[str, float]:
    # µg m-3; the UCI data report low SO2/O3/NO2 as integers (2, 3) and CO in steps of 100
    return {"pm25": 3.0, "pm10": 5.0, "so2": 3.0, "no2": 2.0, "co": 200.0, "o3": 2.0}


def _default_spike_floor() -> dict[str, float]:
    # robust sigma floor: log1p units for pollutants, physical units otherwise
    return {**{p: 0.15 for p in POLLUTANTS}, "t2m": 1.0, "d2m": 1.5, "sp": 1.0, "ws": 1.5, "u10": 1.5,
            "v10": 1.5, "rh": 8.0}


def _default_spike_min_abs() -> dict[str, float]:
    # µg m-3: a spike must also be this far from the median (log-space tests over-react at low levels)
    return {"pm25": 15.0, "pm10": 20.0, "so2": 10.0, "no2": 15.0, "co": 300.0, "o3": 15.0}


@dataclass(frozen=True)
class QCConfig:
    """Thresholds; pass `flag(ds, stuck_hours=6)` etc. to override single fields."""

    stuck_hours: int = 12
    detection_limit: dict[str, float] = field(default_factory=_default_detection_limit)
    floor_quantile: float = 0.05
    spike_window: int = 25
    spike_k: float = 6.0
    spike_vars: tuple[str, ...] = (*POLLUTANTS, "t2m", "d2m", "sp", "ws", "rh")
    spike_floor: dict[str, float] = field(default_factory=_default_spike_floor)
    spike_min_abs: dict[str, float] = field(default_factory=_default_spike_min_abs)
    gap_hours: int = 24
    bounds: dict[str, tuple[float, float]] = field(default_factory=_default_bounds)
    pm_ratio_rel: float = 0.25
    pm_ratio_abs: float = 20.0
    dewpoint_tol: float = 1.0


def _runs(valid: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run id and run length along axis -1 for consecutive `same`-linked cells (2-D input)."""
    start = np.ones_like(valid)
    start[:, 1:] = ~same
    rid = np.cumsum(start.ravel()).reshape(valid.shape)  # row starts are always run starts
    lengths = np.bincount(rid.ravel())
    return rid, lengths[rid]


def _stuck(x: np.ndarray, var: str, cfg: QCConfig) -> np.ndarray:
    valid = ~np.isnan(x)
    same = valid[:, 1:] & valid[:, :-1] & (x[:, 1:] == x[:, :-1])
    _, length = _runs(valid, same)
    out = valid & (length >= cfg.stuck_hours)
    if var in POLLUTANTS and out.any():
        # floor = max(detection limit, the station's low quantile): long runs there are clean air, not faults
        q = np.full(x.shape[0], -np.inf)
        has = valid.any(axis=1)
        q[has] = np.nanquantile(x[has], cfg.floor_quantile, axis=1)
        floor = np.fmax(q, cfg.detection_limit.get(var, 0.0))
        out &= x > floor[:, None]
    if var == "rh":
        out &= x < 100.0
    if var in ("u10", "v10", "tp", "ws"):
        out &= x != 0.0
    return out


def _rolling_median(x: np.ndarray, window: int) -> np.ndarray:
    df = pd.DataFrame(x.T)
    return df.rolling(window, center=True, min_periods=window // 3).median().to_numpy().T


def _spike(x: np.ndarray, var: str, cfg: QCConfig) -> np.ndarray:
    y = np.log1p(np.clip(x, 0, None)) if var in POLLUTANTS else x.astype(np.float64)
    med = _rolling_median(y, cfg.spike_window)
    dev = y - med
    sigma = 1.4826 * _rolling_median(np.abs(dev), cfg.spike_window)
    sigma = np.fmax(sigma, cfg.spike_floor.get(var, 0.0))
    with np.errstate(invalid="ignore"):
        far = np.abs(dev) > cfg.spike_k * sigma
    prev = pd.DataFrame(y.T).ffill().shift(1).to_numpy().T  # nearest valid neighbours
    nxt = pd.DataFrame(y.T).bfill().shift(-1).to_numpy().T
    jump = 0.5 * cfg.spike_k * sigma
    sign = np.sign(dev)
    with np.errstate(invalid="ignore"):
        up_prev = np.where(np.isnan(prev), True, sign * (y - prev) > jump)
        up_next = np.where(np.isnan(nxt), True, sign * (y - nxt) > jump)
    out = far & up_prev & up_next & ~(np.isnan(prev) & np.isnan(nxt))
    if var in cfg.spike_min_abs:
        med_x = np.expm1(med) if var in POLLUTANTS else med
        with np.errstate(invalid="ignore"):
            out &= np.abs(x - med_x) > cfg.spike_min_abs[var]
    return out


def _long_gap(x: np.ndarray, n: int) -> np.ndarray:
    miss = np.isnan(x)
    same = miss[:, 1:] & miss[:, :-1]
    _, length = _runs(miss, same)
    return miss & (length >= n)


def flag(ds: xr.Dataset, config: QCConfig | None = None, **overrides) -> xr.Dataset:
    """`qc_<var>(station, time)` uint8 bitmask for every `(station, time)` data variable of `ds`."""
    cfg = dataclasses.replace(config or QCConfig(), **overrides)
    names = [v for v in ds.data_vars if set(ds[v].dims) == {"station", "time"} and not v.startswith("qc_")]
    arrays = {v: ds[v].transpose("station", "time").to_numpy().astype(np.float64) for v in names}
    out: dict[str, np.ndarray] = {}
    for v, x in arrays.items():
        f = np.zeros(x.shape, dtype=np.uint8)
        f[_stuck(x, v, cfg)] |= STUCK
        if v in cfg.spike_vars:
            f[_spike(x, v, cfg)] |= SPIKE
        if v in NON_NEGATIVE:
            f[x < 0] |= NEGATIVE
        lo, hi = cfg.bounds.get(v, (-np.inf, np.inf))
        with np.errstate(invalid="ignore"):
            f[(x < lo) | (x > hi)] |= IMPOSSIBLE
        f[_long_gap(x, cfg.gap_hours)] |= LONG_GAP
        out[v] = f
    if "pm25" in arrays and "pm10" in arrays:
        with np.errstate(invalid="ignore"):
            bad = arrays["pm25"] > arrays["pm10"] * (1 + cfg.pm_ratio_rel) + cfg.pm_ratio_abs
        out["pm25"][bad] |= IMPOSSIBLE
        out["pm10"][bad] |= IMPOSSIBLE
    if "t2m" in arrays and "d2m" in arrays:
        with np.errstate(invalid="ignore"):
            out["d2m"][arrays["d2m"] > arrays["t2m"] + cfg.dewpoint_tol] |= IMPOSSIBLE
    meanings = " ".join(FLAG_NAMES[b] for b in sorted(FLAG_NAMES))
    coords = {c: ds.coords[c] for c in ("station", "time", "lon", "lat") if c in ds.coords}
    res = xr.Dataset(
        {f"qc_{v}": (("station", "time"), f, {"flag_masks": list(FLAG_NAMES), "flag_meanings": meanings})
         for v, f in out.items()}, coords=coords)
    res.attrs["qc_config"] = repr(cfg)
    return res


def qc_summary(flags: xr.Dataset, by_variable: bool = False) -> pd.DataFrame:
    """Counts of flagged values per station (summed over variables, or one row per station and variable).

    Columns: one per flag name, plus `n_values` (station-hours x variables) for computing rates."""
    rows = []
    for name in flags.data_vars:
        f = flags[name].transpose("station", "time").to_numpy()
        for i, st in enumerate(flags["station"].to_numpy()):
            row = {"station": str(st), "variable": str(name)[3:], "n_values": f.shape[1]}
            for bit, label in FLAG_NAMES.items():
                row[label] = int(np.count_nonzero(f[i] & bit))
            rows.append(row)
    cols = [*FLAG_NAMES.values(), "n_values"]
    df = pd.DataFrame(rows, columns=["station", "variable", *cols])
    if by_variable:
        return df.set_index(["station", "variable"])
    return df.groupby("station")[cols].sum()
