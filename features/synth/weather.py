"""Synthetic weather: synoptic regimes (a daily Markov chain), seasons, diurnal boundary layer, rain, clouds.

Regimes: 0 STAGNANT (weak wind, shallow humid boundary layer), 1 NORTHERLY outbreak (strong dry NW wind,
deep mixing), 2 SOUTHERLY flow (humid, brings regional haze from the North China Plain), 3 WESTERLY (neutral).
Fields are built from a few scalar time series (AR(1) noise, smoothed regime targets) times static spatial
patterns (terrain, city), so a year of 32 x 32 hourly fields takes about a second.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter
from scipy.signal import lfilter

from features.synth.geo import Landscape, smooth_field

STAGNANT, NORTHERLY, SOUTHERLY, WESTERLY = 0, 1, 2, 3
REGIMES = ("stagnant", "northerly", "southerly", "westerly")
# per regime: large-scale wind (towards east, north) m/s, T offset, Td offset (K), BLH factor, p offset (hPa),
# regional-haze target (0 clean .. ~1.6 heavy)
REGIME_WIND = np.array([[0.3, 0.5], [4.2, -4.6], [0.6, 2.6], [2.6, 0.2]])
REGIME_T = np.array([1.0, -4.0, 2.0, 0.0])
REGIME_TD = np.array([3.5, -10.0, 5.0, -2.0])
REGIME_BLH = np.array([0.45, 1.35, 0.8, 1.1])
REGIME_P = np.array([2.0, 6.0, -4.0, 0.0])
REGIME_HAZE = np.array([1.5, 0.0, 1.1, 0.5])
# daily transition model: probability of staying, and weights of the next regime when leaving
STAY_WINTER = np.array([0.74, 0.45, 0.62, 0.5])
STAY_SUMMER = np.array([0.55, 0.35, 0.72, 0.5])
ENTRY_WINTER = np.array([0.34, 0.36, 0.2, 0.1])
ENTRY_SUMMER = np.array([0.2, 0.15, 0.5, 0.15])


@dataclass
class Weather:
    """Hourly fields (time, y, x) float32 in internal units + scalar drivers (time,)."""

    times: np.ndarray  # datetime64[ns], UTC
    u10: np.ndarray
    v10: np.ndarray
    t2m: np.ndarray  # degC
    d2m: np.ndarray  # degC
    sp: np.ndarray  # hPa
    tp: np.ndarray  # mm per hour
    blh: np.ndarray  # m
    ssr: np.ndarray  # W m-2 (hour mean)
    cloud: np.ndarray  # 0..1
    regime: np.ndarray  # (time,) int
    haze: np.ndarray  # (time,) regional haze index
    winter: np.ndarray  # (time,) 1 mid-January .. 0 mid-July
    wind_ls: np.ndarray  # (time, 2) large-scale wind (u, v)
    burning: np.ndarray  # (time,) crop-residue burning season index (June, October)


def rel_humidity(t_c: np.ndarray, td_c: np.ndarray) -> np.ndarray:
    """Relative humidity 0..1 (Magnus formula)."""
    a, b = 17.625, 243.04
    return np.clip(np.exp(a * td_c / (b + td_c) - a * t_c / (b + t_c)), 0.0, 1.0)


def _ar1(rng: np.random.Generator, n: int, tau_h: float, sigma: float) -> np.ndarray:
    phi = np.exp(-1.0 / tau_h)
    x = lfilter([np.sqrt(1 - phi**2) * sigma], [1, -phi], rng.standard_normal(n + 200))
    return x[200:]


def _smooth(x: np.ndarray, tau_h: float) -> np.ndarray:
    """Causal exponential smoothing along axis 0, started at x[0]."""
    a = 1.0 - np.exp(-1.0 / tau_h)
    x = np.asarray(x, dtype=float)
    zi = ((1 - a) * x[0])[None, ...] if x.ndim > 1 else np.array([(1 - a) * x[0]])
    return lfilter([a], [1, -(1 - a)], x, axis=0, zi=zi)[0]


def regime_chain(rng: np.random.Generator, winter_daily: np.ndarray) -> np.ndarray:
    """Daily regimes from the season-dependent Markov chain."""
    out = np.zeros(len(winter_daily), dtype=np.int64)
    w0 = winter_daily[0]
    entry = w0 * ENTRY_WINTER + (1 - w0) * ENTRY_SUMMER
    state = int(rng.choice(4, p=entry / entry.sum()))
    u = rng.random((len(winter_daily), 2))
    for d, w in enumerate(winter_daily):
        stay = w * STAY_WINTER + (1 - w) * STAY_SUMMER
        if d > 0 and u[d, 0] > stay[state]:
            entry = (w * ENTRY_WINTER + (1 - w) * ENTRY_SUMMER).copy()
            entry[state] = 0.0
            cdf = np.cumsum(entry / entry.sum())
            state = int(min(np.searchsorted(cdf, u[d, 1]), 3))
        out[d] = state
    return out


def solar_clear(times_utc: pd.DatetimeIndex, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Clear-sky global radiation (time, y, x), W m-2, from the solar zenith angle at mid-hour."""
    t = times_utc + pd.Timedelta(minutes=30)
    doy = t.dayofyear.to_numpy()[:, None, None]
    hour = (t.hour.to_numpy() + t.minute.to_numpy() / 60.0)[:, None, None]
    decl = np.deg2rad(23.45) * np.sin(2 * np.pi * (284 + doy) / 365.0)
    ha = np.deg2rad(15.0 * (hour + lon[None] / 15.0 - 12.0))
    phi = np.deg2rad(lat[None])
    cosz = np.sin(phi) * np.sin(decl) + np.cos(phi) * np.cos(decl) * np.cos(ha)
    return 1100.0 * np.clip(cosz, 0.0, None) ** 1.2


def make_weather(land: Landscape, times_utc: pd.DatetimeIndex, seed: int) -> Weather:
    """All hourly fields for `times_utc` (must start at local midnight and span whole local days)."""
    rng = np.random.default_rng([seed, 22])
    g = land.grid
    n, shape = len(times_utc), g.shape
    local = times_utc + pd.Timedelta(hours=8)
    ndays = n // 24
    doy = local.dayofyear.to_numpy().astype(float)
    winter = 0.5 * (1 + np.cos(2 * np.pi * (doy - 15) / 365.25))
    regime = np.repeat(regime_chain(rng, winter[::24][:ndays]), 24)[:n]
    lh = local.hour.to_numpy()
    # large-scale scalars
    wscale = 0.8 + 0.4 * winter
    wind_ls = _smooth(REGIME_WIND[regime] * wscale[:, None], 8.0)
    wind_ls[:, 0] += _ar1(rng, n, 6.0, 0.9)
    wind_ls[:, 1] += _ar1(rng, n, 6.0, 0.9)
    t_off = _smooth(REGIME_T[regime], 12.0) + _ar1(rng, n, 48.0, 2.0)
    td_off = _smooth(REGIME_TD[regime], 10.0) + _ar1(rng, n, 36.0, 2.5)
    blh_f = _smooth(REGIME_BLH[regime], 10.0) * np.exp(_ar1(rng, n, 24.0, 0.15))
    p_off = _smooth(REGIME_P[regime], 12.0) + _ar1(rng, n, 48.0, 3.0)
    daily = regime[::24][:ndays]
    spell = np.zeros(ndays)
    for d in range(1, ndays):  # stagnant spells build regional haze day after day
        spell[d] = spell[d - 1] + 1 if daily[d] == daily[d - 1] else 0
    boost = np.where(daily == STAGNANT, 1.0 + 0.45 * np.minimum(spell, 5), 1.0)
    target = (REGIME_HAZE[daily] * boost * rng.lognormal(0.0, 0.3, ndays)).repeat(24)[:n]
    haze = np.empty(n)
    h = 0.6
    for k in range(n):  # fills slowly (1-2 days), cleared fast by outbreaks
        tau = 30.0 if target[k] > h else 7.0
        h += (target[k] - h) / tau
        haze[k] = h
    # static patterns
    res_km = g.res_m / 1000.0
    foot = gaussian_filter(land.mountain, 6.0 / res_km)
    speed_pat = (1.0 - 0.35 * land.urban + 0.25 * land.mountain + 0.08 * smooth_field(rng, shape, res_km, 25))
    breeze_pat = 0.5 + 1.0 * foot / max(foot.max(), 1e-9)
    lapse = land.elevation - 50.0
    tex_t = smooth_field(rng, shape, res_km, 30)
    # diurnal breeze: daytime up-valley (towards NW), night drainage (towards SE)
    ang = (lh - 14.0) / 24.0 * 2 * np.pi
    breeze = 1.2 * np.cos(ang) * (0.6 + 0.4 * (1 - winter))
    calm = 1.0 / (1.0 + np.hypot(wind_ls[:, 0], wind_ls[:, 1]) / 3.0)
    bvec = np.array([-0.45, 0.9])
    u10 = (wind_ls[:, 0, None, None] * speed_pat + (breeze * calm)[:, None, None] * bvec[0] * breeze_pat)
    v10 = (wind_ls[:, 1, None, None] * speed_pat + (breeze * calm)[:, None, None] * bvec[1] * breeze_pat)
    ws = np.hypot(u10, v10)
    # clear-sky radiation, temperature, humidity
    sclear = solar_clear(times_utc, land.lon, land.lat)
    t_clim = 12.5 - 15.5 * np.cos(2 * np.pi * (doy - 18) / 365.25)
    td_clim = 3.0 - 18.0 * np.cos(2 * np.pi * (doy - 20) / 365.25)
    # rain events (daily draws)
    tp = np.zeros((n,) + shape)
    p_rain = np.array([0.04, 0.06, 0.1, 0.05])[regime[::24][:ndays]] + \
        np.array([0.08, 0.12, 0.5, 0.2])[regime[::24][:ndays]] * (1 - winter[::24][:ndays])
    ev = rng.random((ndays, 8))
    xkm, ykm = land.xkm, land.ykm
    for d in np.flatnonzero(ev[:, 0] < p_rain):
        summer = 1 - winter[d * 24]
        start = int(14 + 8 * ev[d, 1]) if ev[d, 2] < summer else int(24 * ev[d, 1])
        dur = 1 + int(rng.geometric(0.3))
        inten = rng.gamma(0.8, 0.4 + 3.5 * summer)
        cx, cy = (ev[d, 3] - 0.5) * 120, (ev[d, 4] - 0.5) * 120
        rad = 20 + 40 * ev[d, 5]
        blob = 0.15 + np.exp(-0.5 * ((xkm - cx) ** 2 + (ykm - cy) ** 2) / rad**2)
        k0, k1 = d * 24 + start, min(d * 24 + start + dur, n)
        if k0 < n:
            tp[k0:k1] += inten * blob[None] * (1 + 0.3 * np.sin(np.arange(k1 - k0) * 1.3))[:, None, None]
    raining = tp.max(axis=(1, 2)) > 0.05
    # cloud field: moving periodic texture + humidity + rain
    big = smooth_field(rng, (2 * shape[0], 2 * shape[1]), res_km, 15)
    disp = np.cumsum(wind_ls * 1.5 * 3600.0 / g.res_m, axis=0).astype(np.int64)
    cloud_noise = _ar1(rng, n, 12.0, 0.25)
    t2m = (t_clim + t_off)[:, None, None] + 0.8 * tex_t - 0.0065 * lapse
    td_base = np.minimum(td_clim + td_off, 26.0)[:, None, None] - 0.005 * lapse
    rows = (np.arange(shape[0])[None, :] - disp[:, 1, None]) % big.shape[0]
    cols = (np.arange(shape[1])[None, :] - disp[:, 0, None]) % big.shape[1]
    moving = big[rows[:, :, None], cols[:, None, :]]
    rh0 = rel_humidity(t2m, np.minimum(td_base, t2m))
    cloud = np.clip(0.1 + 1.3 * (rh0 - 0.55) + 0.3 * moving + cloud_noise[:, None, None]
                    + 0.5 * (tp > 0.05) + 0.2 * raining[:, None, None], 0.0, 1.0)
    ssr = sclear * (1.0 - 0.72 * cloud**2)
    # diurnal temperature cycle (clear skies: larger) and urban heat island at night
    amp = (4.0 + 2.0 * (1 - winter))[:, None, None] * (1.0 - 0.6 * cloud)
    night = ((lh < 7) | (lh > 18)).astype(float)[:, None, None]
    t2m = t2m + amp * np.cos((lh[:, None, None] - 15.0) / 24.0 * 2 * np.pi) + 1.8 * land.urban * night
    d2m = np.minimum(td_base, t2m - 0.3)
    d2m = np.where(tp > 0.05, np.maximum(d2m, t2m - 1.5), d2m)
    sp = ((1013.0 + 11.0 * (2 * winter - 1) + p_off + 0.8 * np.cos((lh - 10) / 12 * np.pi))[:, None, None]
          * np.exp(-land.elevation / 8400.0))
    # boundary layer: convective growth with the day's accumulated sunshine, mechanical mixing at night
    hmax = ((950.0 + 1300.0 * (1 - winter)) * blh_f)[:, None, None] * (1 - 0.45 * cloud) * (1 + 0.15 * land.urban)
    sun = ssr.reshape(ndays, 24, *shape)
    frac = (np.cumsum(sun, axis=1) / np.maximum(sun.sum(axis=1, keepdims=True), 1.0)).reshape(n, *shape)
    hmech = 70.0 + 50.0 * ws + 90.0 * land.urban + (200.0 * (1 - winter))[:, None, None]  # warm nights mix deeper
    blh = np.where(ssr > 40.0, np.maximum(hmech, hmax * np.sqrt(frac)), hmech)
    blh = np.clip(blh, 50.0, 3000.0)
    f32 = np.float32
    return Weather(times=times_utc.to_numpy(), u10=u10.astype(f32), v10=v10.astype(f32), t2m=t2m.astype(f32),
                   d2m=d2m.astype(f32), sp=sp.astype(f32), tp=tp.astype(f32), blh=blh.astype(f32),
                   ssr=ssr.astype(f32), cloud=cloud.astype(f32), regime=regime, haze=haze, winter=winter,
                   wind_ls=wind_ls,
                   burning=np.exp(-(((doy - 290) / 18) ** 2)) + 0.5 * np.exp(-(((doy - 165) / 12) ** 2)))
