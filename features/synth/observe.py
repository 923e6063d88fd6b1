"""Observing the synthetic truth: monitoring stations (noise, drift, gaps), met stations, satellite overpass.

Station pollutant values are the mixed-layer concentration of the station's cell with multiplicative +
additive instrument noise, a slow calibration drift (random walk, reset at quarterly recalibrations), random
missing hours and multi-day outages. Weather columns come from the nearest of three met stations, as in the
real UCI files. The satellite sees the whole column once a day at ~13:30 local time, through cloud gaps.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from features.grid import Grid
from features.synth import chemistry as ch

# name, lon, lat, kind (synthetic stations placed where Beijing's monitors are)
STATIONS = (
    ("SynDongcheng", 116.434, 39.952, "urban"), ("SynXicheng", 116.361, 39.9425, "urban"),
    ("SynChaoyang", 116.473, 39.9716, "urban"), ("SynHaidian", 116.315, 39.9934, "urban"),
    ("SynFengtai", 116.279, 39.863, "urban"), ("SynShijingshan", 116.225, 39.9279, "urban"),
    ("SynTongzhou", 116.663, 39.886, "suburban"), ("SynShunyi", 116.655, 40.127, "suburban"),
    ("SynChangping", 116.23, 40.1952, "suburban"), ("SynDaxing", 116.404, 39.718, "suburban"),
    ("SynHuairou", 116.644, 40.3937, "rural"), ("SynMentougou", 116.105, 40.06, "rural"),
)
MET_STATIONS = (("Nanjiao", 116.47, 39.81), ("Haidian", 116.28, 39.98), ("Changping", 116.21, 40.22),
                ("Huairou", 116.63, 40.36))
POLLUTANTS = ("pm25", "pm10", "so2", "no2", "co", "o3")
UCI_POLL = {"pm25": "PM2.5", "pm10": "PM10", "so2": "SO2", "no2": "NO2", "co": "CO", "o3": "O3"}
NOISE_REL = {"pm25": 0.07, "pm10": 0.09, "so2": 0.10, "no2": 0.08, "co": 0.08, "o3": 0.06}
NOISE_ABS = {"pm25": 2.0, "pm10": 3.0, "so2": 1.0, "no2": 2.0, "co": 40.0, "o3": 2.0}
FLOOR = {"pm25": 3.0, "pm10": 5.0, "so2": 2.0, "no2": 2.0, "co": 100.0, "o3": 2.0}
COMPASS = ("N", "NNE", "NE", "ENE", "E", "ESE", "SE", "SSE", "S", "SSW", "SW", "WSW", "W", "WNW", "NW", "NNW")
OVERPASS_LOCAL_H = 13  # overpass ~13:30 local = mean of the 13:00 and 14:00 local hours
MEE_FINE, MEE_COARSE = 3.5, 0.6  # m2 g-1 mass extinction efficiencies (dry)


def station_table(grid: Grid) -> pd.DataFrame:
    """Stations inside `grid` with their cell and nearest met station."""
    rows = []
    for name, lon, lat, kind in STATIONS:
        x, y = grid.project(lon, lat)
        c, r = round((float(x) - grid.x0) / grid.res_m), round((float(y) - grid.y0) / grid.res_m)
        if not (0 <= r < grid.ny and 0 <= c < grid.nx):
            continue
        d = [np.hypot((lon - mlon) * np.cos(np.deg2rad(lat)), lat - mlat) for _, mlon, mlat in MET_STATIONS]
        rows.append({"station": name, "kind": kind, "row": r, "col": c,
                     "met_station": MET_STATIONS[int(np.argmin(d))][0], "lon": lon, "lat": lat})
    if not rows:  # tiny test grids: put stations on a regular pattern instead
        lon2, lat2 = grid.centres_lonlat()
        for i, (name, _, _, kind) in enumerate(STATIONS):
            r, c = (i * 7 + 1) % grid.ny, (i * 5 + 2) % grid.nx
            rows.append({"station": name, "kind": kind, "row": r, "col": c, "met_station": MET_STATIONS[0][0],
                         "lon": round(float(lon2[r, c]), 4), "lat": round(float(lat2[r, c]), 4)})
    return pd.DataFrame(rows)


def met_cells(grid: Grid) -> dict[str, tuple[int, int]]:
    """Cell of each met station (clamped into small grids)."""
    out = {}
    for name, lon, lat in MET_STATIONS:
        x, y = grid.project(lon, lat)
        c = int(np.clip(np.rint((float(x) - grid.x0) / grid.res_m), 0, grid.nx - 1))
        r = int(np.clip(np.rint((float(y) - grid.y0) / grid.res_m), 0, grid.ny - 1))
        out[name] = (r, c)
    return out


def surface_species(c_ml: np.ndarray, t_c: np.ndarray, rh: np.ndarray, j: np.ndarray) -> dict[str, np.ndarray]:
    """Mixed-layer pm25, pm10, so2, no2, co, o3 (ug m-3) from tracer concentrations."""
    pm = ch.pm25(c_ml, t_c, rh)
    no2, o3 = ch.pss(c_ml[ch.IX["nox"]], c_ml[ch.IX["ox"]], j)
    return {"pm25": pm, "pm10": pm + c_ml[ch.IX["pmc"]], "so2": c_ml[ch.IX["so2"]], "no2": no2,
            "co": c_ml[ch.IX["co"]], "o3": o3}


def column_fields(c_ml: np.ndarray, c_rl: np.ndarray, h: np.ndarray, top: float, t_c: np.ndarray,
                  rh: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(AOD at 550 nm, tropospheric NO2 column umol m-2) of the two-layer column."""
    d_rl = top - h
    grow_ml = (1.0 - np.minimum(rh, 0.95)) ** -0.6
    grow_rl = (1.0 - np.minimum(0.8 * rh, 0.95)) ** -0.6
    fine_ml, fine_rl = ch.pm25(c_ml, t_c, rh), ch.pm25(c_rl, t_c - 5, 0.8 * rh)
    aod = 1e-6 * ((MEE_FINE * grow_ml * fine_ml + MEE_COARSE * c_ml[ch.IX["pmc"]]) * h
                  + (MEE_FINE * grow_rl * fine_rl + MEE_COARSE * c_rl[ch.IX["pmc"]]) * d_rl) + 0.04
    no2_ml, _ = ch.pss(c_ml[ch.IX["nox"]], c_ml[ch.IX["ox"]], j)
    no2_rl, _ = ch.pss(c_rl[ch.IX["nox"]], c_rl[ch.IX["ox"]], 0.8 * j)
    return aod, (no2_ml * h + no2_rl * d_rl) / ch.M_NO2 + 15.0


def _outages(rng: np.random.Generator, n: int, per_year: float) -> np.ndarray:
    """Boolean mask of hours inside random outages (6 h to ~10 days)."""
    mask = np.zeros(n, dtype=bool)
    for _ in range(rng.poisson(per_year * n / 8760.0)):
        start = int(rng.integers(0, n))
        dur = int(np.clip(rng.lognormal(np.log(30.0), 1.1), 3, 240))
        mask[start:start + dur] = True
    return mask


def station_frames(truth: np.ndarray, table: pd.DataFrame, met: dict[str, np.ndarray],
                   times_utc: pd.DatetimeIndex, seed: int) -> dict[str, pd.DataFrame]:
    """UCI-layout frames per station. truth: (time, station, pollutant); met[name] (time, 5): t2m, d2m, sp,
    tp, u10, v10 of each met station's cell."""
    rng = np.random.default_rng([seed, 33])
    n = len(times_utc)
    local = times_utc + pd.Timedelta(hours=8)
    frames = {}
    for s, row in enumerate(table.itertuples()):
        cols: dict[str, object] = {"No": np.arange(1, n + 1), "year": local.year, "month": local.month,
                                   "day": local.day, "hour": local.hour}
        down = _outages(rng, n, 3.0)
        for p_i, p in enumerate(POLLUTANTS):
            drift = np.cumsum(rng.normal(0.0, 0.015 / np.sqrt(168.0), n))
            drift -= drift[(np.arange(n) // 2160) * 2160]  # recalibrated every ~90 days
            x = truth[:, s, p_i] * (1 + drift) * (1 + NOISE_REL[p] * rng.standard_normal(n)) \
                + NOISE_ABS[p] * rng.standard_normal(n)
            x = np.maximum(x, FLOOR[p])
            x = np.round(x / 100.0) * 100.0 if p == "co" else np.round(x)
            gaps = down | (rng.random(n) < 0.012) | _outages(rng, n, 0.7)
            if p == "pm10":  # PM10 monitors fail together with PM2.5 more often than not
                gaps |= np.isnan(cols["PM2.5"]) & (rng.random(n) < 0.7)  # type: ignore[arg-type]
            cols[UCI_POLL[p]] = np.where(gaps, np.nan, x)
        m = met[row.met_station]
        mgap = _outages(rng, n, 0.5) | (rng.random(n) < 0.002)
        ws = 0.7 * np.hypot(m[:, 4], m[:, 5])
        wd_idx = np.rint((np.degrees(np.arctan2(-m[:, 4], -m[:, 5])) % 360.0) / 22.5).astype(int) % 16
        vals = {"TEMP": np.round(m[:, 0] + 0.3 * rng.standard_normal(n), 1),
                "PRES": np.round(m[:, 2] + 0.2 * rng.standard_normal(n), 1),
                "DEWP": np.round(np.minimum(m[:, 1] + 0.4 * rng.standard_normal(n), m[:, 0]), 1),
                "RAIN": np.round(m[:, 3], 1), "WSPM": np.round(ws + 0.15 * np.abs(rng.standard_normal(n)), 1)}
        for k, v in vals.items():
            cols[k] = np.where(mgap, np.nan, v)
        wd = np.array(COMPASS, dtype=object)[wd_idx]
        cols["wd"] = np.where(mgap, None, wd)
        cols["station"] = row.station
        frames[row.station] = pd.DataFrame(cols)
    return frames


def satellite_obs(aod: np.ndarray, no2col: np.ndarray, cloud: np.ndarray, seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Retrievals with noise; NaN where the overpass scene is cloudy (cloud fraction > 0.35)."""
    rng = np.random.default_rng([seed, 44])
    gap = cloud > 0.35
    a = np.maximum(aod * (1 + 0.15 * rng.standard_normal(aod.shape)) + 0.03 * rng.standard_normal(aod.shape), 0.0)
    n = np.maximum(no2col * (1 + 0.25 * rng.standard_normal(no2col.shape))
                   + 10.0 * rng.standard_normal(no2col.shape), 0.0)
    return np.where(gap, np.nan, a).astype(np.float32), np.where(gap, np.nan, n).astype(np.float32)
