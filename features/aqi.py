"""China Air Quality Index (HJ 633-2012): IAQI by pollutant, AQI, categories (EN/ZH). numpy only.

Hourly forecasts use hourly IAQI: O3 with its 1-h breakpoints; PM2.5 (and PM10), which have no 1-h
breakpoints, with the 24-h-mean breakpoints applied directly to the hourly value (as most real-time AQI
publications do). Daily AQI would use 24-h means (and O3's 8-h running maximum); see `training.metrics`.
Concentrations in ug m-3 (CO in mg m-3). Above the top breakpoint the IAQI is extrapolated linearly
along the last segment (HJ 633 caps reporting at 500; we keep the number and the category stays 'Severe').
"""
from __future__ import annotations

import numpy as np

IAQI_LEVELS = np.array([0, 50, 100, 150, 200, 300, 400, 500], dtype=float)
BREAKPOINTS: dict[str, np.ndarray] = {
    "pm25": np.array([0, 35, 75, 115, 150, 250, 350, 500], dtype=float),  # 24-h mean (applied hourly)
    "pm25_24h": np.array([0, 35, 75, 115, 150, 250, 350, 500], dtype=float),
    "pm10": np.array([0, 50, 150, 250, 350, 420, 500, 600], dtype=float),
    "pm10_24h": np.array([0, 50, 150, 250, 350, 420, 500, 600], dtype=float),
    "o3": np.array([0, 160, 200, 300, 400, 800, 1000, 1200], dtype=float),  # 1-h
    "o3_1h": np.array([0, 160, 200, 300, 400, 800, 1000, 1200], dtype=float),
    "so2_24h": np.array([0, 50, 150, 475, 800, 1600, 2100, 2620], dtype=float),
    "no2_24h": np.array([0, 40, 80, 180, 280, 565, 750, 940], dtype=float),
    "no2": np.array([0, 100, 200, 700, 1200, 2340, 3090, 3840], dtype=float),  # 1-h
    "co_24h": np.array([0, 2, 4, 14, 24, 36, 48, 60], dtype=float),  # mg m-3
    "co": np.array([0, 5, 10, 35, 60, 90, 120, 150], dtype=float),  # 1-h, mg m-3
}
# O3 8-h mean has breakpoints only up to IAQI 300 (above: use 1-h)
O3_8H = (np.array([0, 100, 160, 215, 265, 800], dtype=float), IAQI_LEVELS[:6])

CATEGORIES: list[dict[str, object]] = [
    {"level": 1, "max_aqi": 50, "en": "Excellent", "zh": "优", "color": "#00e400"},
    {"level": 2, "max_aqi": 100, "en": "Good", "zh": "良", "color": "#ffff00"},
    {"level": 3, "max_aqi": 150, "en": "Lightly polluted", "zh": "轻度污染", "color": "#ff7e00"},
    {"level": 4, "max_aqi": 200, "en": "Moderately polluted", "zh": "中度污染", "color": "#ff0000"},
    {"level": 5, "max_aqi": 300, "en": "Heavily polluted", "zh": "重度污染", "color": "#99004c"},
    {"level": 6, "max_aqi": float("inf"), "en": "Severely polluted", "zh": "严重污染", "color": "#7e0023"},
]


def iaqi(conc: np.ndarray | float, pollutant: str) -> np.ndarray:
    """Individual AQI; NaN stays NaN, negative concentrations count as 0. `pollutant` a BREAKPOINTS key or
    `o3_8h`."""
    if pollutant == "o3_8h":
        bp, lv = O3_8H
    elif pollutant in BREAKPOINTS:
        bp, lv = BREAKPOINTS[pollutant], IAQI_LEVELS
    else:
        raise KeyError(f"no AQI breakpoints for {pollutant!r}; known: {sorted(BREAKPOINTS)} + ['o3_8h']")
    c = np.clip(np.asarray(conc, dtype=float), 0.0, None)
    out = np.interp(c, bp, lv)
    top = c > bp[-1]
    slope = (lv[-1] - lv[-2]) / (bp[-1] - bp[-2])
    out = np.where(top, lv[-1] + slope * (c - bp[-1]), out)
    # HJ 633 rounds IAQI up to the next integer
    return np.where(np.isnan(c), np.nan, np.ceil(out - 1e-9))


def aqi(**conc: np.ndarray | float) -> np.ndarray:
    """AQI = max IAQI over the given pollutants, e.g. `aqi(pm25=..., o3=...)`; NaN only if all are NaN."""
    if not conc:
        raise ValueError("aqi() needs at least one pollutant")
    vals = np.stack(np.broadcast_arrays(*[iaqi(v, k) for k, v in conc.items()]))
    all_nan = np.all(np.isnan(vals), axis=0)
    return np.where(all_nan, np.nan, np.nanmax(np.where(np.isnan(vals), -np.inf, vals), axis=0))


def primary_pollutant(**conc: np.ndarray | float) -> np.ndarray:
    """Name of the pollutant setting the AQI where AQI > 50, else '' (array of str)."""
    names = list(conc)
    vals = np.stack(np.broadcast_arrays(*[iaqi(v, k) for k, v in conc.items()]))
    arg = np.argmax(np.nan_to_num(vals, nan=-1.0), axis=0)
    best = np.take_along_axis(vals, arg[None], 0)[0]
    return np.where(best > 50, np.array([n.split("_")[0] for n in names])[arg], "")


def category(aqi_value: np.ndarray | float) -> np.ndarray:
    """Category level 1..6 (0 where NaN): 0-50 -> 1, 51-100 -> 2, ..., > 300 -> 6."""
    a = np.asarray(aqi_value, dtype=float)
    edges = np.array([50, 100, 150, 200, 300], dtype=float)
    lvl = np.searchsorted(edges, a, side="left") + 1
    return np.where(np.isnan(a), 0, lvl).astype(np.int64)


def category_name(level: int, lang: str = "en") -> str:
    """Name of category `level` (1..6) in 'en' or 'zh'."""
    if not 1 <= int(level) <= 6:
        raise ValueError(f"AQI category level must be 1..6, got {level}")
    return str(CATEGORIES[int(level) - 1][lang])
