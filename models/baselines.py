"""Cheap reference forecasts at stations (numpy). Layout as in `training.metrics`:
`series [T, 2, S]` hourly pm25/o3 (NaN missing) on a continuous UTC axis `times [T]`; `init_idx [N]` indices
into T; point forecasts `[N, L, 2, S]`; with quantiles `[N, L, 2, 3, S]` (p10, p50, p90).

- persistence: last observation at or before init (looking back at most `max_back` hours), every lead.
- diurnal persistence: the value at the same hour of the last observed day: valid - 24*ceil(lead/24) h
  (<= init), falling back to persistence where missing.
- climatology: mean by (month, local hour) of the valid time, per station, fitted on training times only;
  stations without training data get the mean over stations.
- blend: per lead and species least squares y = a + b*persistence + c*climatology (fitted on training inits;
  persistence gaps filled with climatology; PM2.5 in log1p space, O3 linear — see `Blend`).
- quantiles: per-lead, per-species P10/P90 of training residuals in log1p space (multiplicative bands).
Only pollutant values at or before init are read for a forecast (valid-time data only for scoring).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def ffill(series: np.ndarray, limit: int) -> np.ndarray:
    """Forward-fill NaN along axis 0 for at most `limit` steps."""
    idx = np.where(np.isfinite(series), np.arange(series.shape[0]).reshape(-1, *[1] * (series.ndim - 1)), -1)
    last = np.maximum.accumulate(idx, axis=0)
    age = np.arange(series.shape[0]).reshape(-1, *[1] * (series.ndim - 1)) - last
    ok = (last >= 0) & (age <= limit)
    filled = np.take_along_axis(series, np.clip(last, 0, None), axis=0)
    out = np.where(ok, filled, np.nan)
    return out


def lead_indices(init_idx: np.ndarray, leads: int) -> np.ndarray:
    """[N, L] valid-time indices init + 1 .. init + L."""
    return np.asarray(init_idx)[:, None] + np.arange(1, leads + 1)[None, :]


def persistence(series: np.ndarray, init_idx: np.ndarray, leads: int = 72, max_back: int = 6) -> np.ndarray:
    """[N, L, 2, S]: last value at or before init (within `max_back` h), repeated over leads."""
    last = ffill(series, max_back)[np.asarray(init_idx)]  # [N, 2, S]
    return np.repeat(last[:, None], leads, axis=1)


def diurnal_persistence(series: np.ndarray, init_idx: np.ndarray, leads: int = 72, max_back: int = 6
                        ) -> np.ndarray:
    """[N, L, 2, S]: value at valid - 24*ceil(lead/24) h, else persistence."""
    lead = np.arange(1, leads + 1)
    src = np.asarray(init_idx)[:, None] + lead[None, :] - 24 * np.ceil(lead / 24).astype(int)[None, :]
    src = np.clip(src, 0, series.shape[0] - 1)
    val = ffill(series, 1)[src]  # one-hour gap tolerance; src <= init always
    return np.where(np.isfinite(val), val, persistence(series, init_idx, leads, max_back))


def local_month_hour(times: np.ndarray, utc_offset_h: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """Month (0..11) and hour (0..23) in local time of UTC datetime64 times."""
    t = np.asarray(times, dtype="datetime64[ns]") + np.timedelta64(int(utc_offset_h * 3600), "s")
    month = t.astype("datetime64[M]").astype(int) % 12
    hour = (t.astype("datetime64[h]").astype(np.int64) % 24).astype(int)
    return month, hour


@dataclass
class Climatology:
    """Month x local-hour mean per station (and pooled), fitted on the training rows only."""

    utc_offset_h: float = 8.0
    table: np.ndarray | None = None  # [12, 24, 2, S]
    pooled: np.ndarray | None = None  # [12, 24, 2]

    def fit(self, series: np.ndarray, times: np.ndarray, train: np.ndarray) -> Climatology:
        m, h = local_month_hour(times, self.utc_offset_h)
        key = (m * 24 + h)[train]
        x = series[train]
        fin = np.isfinite(x)
        s = np.zeros((288,) + x.shape[1:])
        c = np.zeros((288,) + x.shape[1:])
        np.add.at(s, key, np.where(fin, x, 0.0))
        np.add.at(c, key, fin.astype(float))
        with np.errstate(invalid="ignore", divide="ignore"):
            self.table = (s / c).reshape(12, 24, *x.shape[1:])
            self.pooled = (s.sum(-1) / c.sum(-1)).reshape(12, 24, x.shape[1])
        # fill empty (station, month, hour) from pooled, pooled gaps from the species mean
        self.pooled = np.where(np.isfinite(self.pooled), self.pooled, np.nanmean(self.pooled, axis=(0, 1)))
        self.table = np.where(np.isfinite(self.table), self.table, self.pooled[..., None])
        return self

    def at(self, times: np.ndarray, stations: np.ndarray | None = None) -> np.ndarray:
        """[*times.shape, 2, S] climatology; `stations` = column indices into the fitted table, -1 = pooled."""
        m, h = local_month_hour(times.ravel(), self.utc_offset_h)
        tab = self.table[m, h]  # [n, 2, S_fit]
        if stations is not None:
            st = np.asarray(stations)
            tab = np.where(st[None, None, :] >= 0, tab[:, :, np.clip(st, 0, None)], self.pooled[m, h][..., None])
        return tab.reshape(*times.shape, *tab.shape[1:])


@dataclass
class ResidualQuantiles:
    """P10/P90 of log1p residuals per lead and species: p_q = expm1(log1p(p50) + r_q[lead, species])."""

    quantiles: tuple[float, float, float] = (0.1, 0.5, 0.9)
    offsets: np.ndarray | None = None  # [L, 2, 3]

    def fit(self, p50: np.ndarray, obs: np.ndarray) -> ResidualQuantiles:
        r = np.log1p(np.clip(obs, 0, None)) - np.log1p(np.clip(p50, 0, None))  # [N, L, 2, S]
        r = np.moveaxis(r, 3, 1).reshape(-1, *r.shape[1:3])  # [N*S, L, 2]
        with np.errstate(invalid="ignore"):
            off = np.nanquantile(r, list(self.quantiles), axis=0)  # [3, L, 2]
        off = np.moveaxis(np.nan_to_num(off), 0, -1)
        off[..., 1] = 0.0
        off[..., 0] = np.minimum(off[..., 0], 0.0)
        off[..., 2] = np.maximum(off[..., 2], 0.0)
        self.offsets = off
        return self

    def apply(self, p50: np.ndarray) -> np.ndarray:
        """[N, L, 2, S] -> [N, L, 2, 3, S]."""
        lp = np.log1p(np.clip(p50, 0, None))[:, :, :, None, :]
        return np.expm1(lp + self.offsets[None, :, :, :, None])


@dataclass
class Blend:
    """Per-lead, per-species least-squares blend of persistence and climatology, fitted in `space[species]`
    (log1p for PM2.5 — closer to a median fit of a skewed variable, measured better on Beijing — linear for O3).
    """

    space: tuple[str, ...] = ("log1p", "linear")
    coef: np.ndarray | None = None  # [L, 2, 3] (intercept, persistence, climatology)

    def _fwd(self, x: np.ndarray, s: int) -> np.ndarray:
        return np.log1p(np.clip(x, 0, None)) if self.space[s] == "log1p" else x

    def _inv(self, x: np.ndarray, s: int) -> np.ndarray:
        return np.expm1(x) if self.space[s] == "log1p" else x

    def fit(self, pers: np.ndarray, clim: np.ndarray, obs: np.ndarray) -> Blend:
        pers = np.where(np.isfinite(pers), pers, clim)
        n_l, n_sp = obs.shape[1], obs.shape[2]
        self.coef = np.zeros((n_l, n_sp, 3))
        for s in range(n_sp):
            ps, cs, ys = self._fwd(pers[:, :, s], s), self._fwd(clim[:, :, s], s), self._fwd(obs[:, :, s], s)
            for ld in range(n_l):
                p, c, y = ps[:, ld].ravel(), cs[:, ld].ravel(), ys[:, ld].ravel()
                v = np.isfinite(p) & np.isfinite(c) & np.isfinite(y)
                a = np.stack([np.ones(v.sum()), p[v], c[v]], 1)
                self.coef[ld, s] = np.linalg.lstsq(a, y[v], rcond=None)[0] if v.sum() > 3 else [0, 0, 1]
        return self

    def predict(self, pers: np.ndarray, clim: np.ndarray) -> np.ndarray:
        pers = np.where(np.isfinite(pers), pers, clim)
        out = np.empty(np.broadcast_shapes(pers.shape, clim.shape))
        for s in range(out.shape[2]):
            c = self.coef[None, :, s, :, None]
            z = c[..., 0, :] + c[..., 1, :] * self._fwd(pers[:, :, s], s) + c[..., 2, :] * self._fwd(clim[:, :, s], s)
            out[:, :, s] = self._inv(z, s)
        return np.clip(out, 0.0, None)


def idw_persistence(series: np.ndarray, init_idx: np.ndarray, src_lonlat: np.ndarray, dst_lonlat: np.ndarray,
                    leads: int = 72, power: float = 2.0, exclude_km: float = 0.5) -> np.ndarray:
    """Persistence interpolated to other points by inverse-distance weighting of the stations' last values.

    src_lonlat [S, 2], dst_lonlat [P, 2]; sources closer than `exclude_km` to a point are skipped (so a
    held-out station is never predicted from itself). -> [N, L, 2, P].
    """
    last = ffill(series, 6)[np.asarray(init_idx)]  # [N, 2, S]
    lat0 = np.deg2rad(np.mean(src_lonlat[:, 1]))
    dx = (dst_lonlat[:, None, 0] - src_lonlat[None, :, 0]) * 111.32 * np.cos(lat0)
    dy = (dst_lonlat[:, None, 1] - src_lonlat[None, :, 1]) * 110.57
    d = np.hypot(dx, dy)  # [P, S]
    w = np.where(d > exclude_km, 1.0 / np.maximum(d, 1e-3) ** power, 0.0)
    fin = np.isfinite(last)
    num = np.einsum("ps,nks->nkp", w, np.where(fin, last, 0.0))
    den = np.einsum("ps,nks->nkp", w, fin.astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        val = num / den
    return np.repeat(val[:, None], leads, axis=1)


@dataclass
class BaselineSuite:
    """Fits climatology, blend and residual quantiles on training inits; predicts all baselines."""

    leads: int = 72
    utc_offset_h: float = 8.0
    clim: Climatology = field(default_factory=Climatology)
    blend: Blend = field(default_factory=Blend)
    quant: dict[str, ResidualQuantiles] = field(default_factory=dict)

    def _point(self, series, times, init_idx, stations=None) -> dict[str, np.ndarray]:
        vt = lead_indices(init_idx, self.leads)
        vtimes = times[0] + (vt * np.timedelta64(1, "h")).astype("timedelta64[ns]")
        clim = self.clim.at(vtimes, stations)
        pers = persistence(series, init_idx, self.leads)
        out = {"persistence": pers, "diurnal_persistence": diurnal_persistence(series, init_idx, self.leads),
               "climatology": clim}
        if self.blend.coef is not None:
            out["blend"] = self.blend.predict(pers, clim)
        return out

    def fit(self, series: np.ndarray, times: np.ndarray, train_times: np.ndarray,
            init_idx: np.ndarray) -> BaselineSuite:
        """`train_times` bool [T]: rows usable for climatology; `init_idx` training inits (their valid
        times must lie in the training period)."""
        self.clim = Climatology(self.utc_offset_h).fit(series, times, train_times)
        obs = observed(series, init_idx, self.leads)
        pts = self._point(series, times, init_idx)
        self.blend = Blend().fit(pts["persistence"], pts["climatology"], obs)
        pts["blend"] = self.blend.predict(pts["persistence"], pts["climatology"])
        self.quant = {k: ResidualQuantiles().fit(v, obs) for k, v in pts.items()}
        return self

    def predict(self, series: np.ndarray, times: np.ndarray, init_idx: np.ndarray,
                stations: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """name -> [N, L, 2, 3, S]."""
        return {k: self.quant[k].apply(v) for k, v in self._point(series, times, init_idx, stations).items()}


def observed(series: np.ndarray, init_idx: np.ndarray, leads: int = 72) -> np.ndarray:
    """Observations at valid times [N, L, 2, S] (NaN beyond the series)."""
    vt = lead_indices(init_idx, leads)
    ok = vt < series.shape[0]
    obs = series[np.clip(vt, 0, series.shape[0] - 1)]
    return np.where(ok[:, :, None, None], obs, np.nan)
