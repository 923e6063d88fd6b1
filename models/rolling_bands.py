"""Rolling recalibration of the P10-P90 band over a trailing window of verified forecasts (EMOS-style).

The model's band is calibrated once, on its validation year. A later year with larger errors (ozone rises
from year to year in Beijing) leaves it too narrow. Forecasts issued in sequence can correct that the way
operational post-processing does, from a trailing window of forecasts already verified: at init time t, the
forecasts issued earlier whose valid time lies in (t - window, t] and whose observation exists give, per
species, the factor k by which both gaps (P50-P10, P90-P50, in log1p space) must be scaled for the central
band to cover `target` of them. Only observations up to t are used, so a backtest stays causal. k is shrunk
toward 1 while few samples exist (`prior_n`) and bounded, and P50 never moves. k is measured at cells with a
reporting station and applied there only: cells without one keep the model's band (their own calibration
class, M14), which a later year did not make too narrow (docs/experiments-beijing-14.md).
"""
from __future__ import annotations

import numpy as np

HOUR = np.timedelta64(1, "h")


def band_z(pred: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """|log1p(obs) - log1p(P50)| over the gap on the observation's side: the band covers obs iff z <= 1.

    pred [..., 3] (P10, P50, P90, ug m-3), obs [...] (NaN where unobserved) -> z [...] (NaN where unobserved)."""
    lp = np.log1p(np.clip(pred, 0, None))
    ly = np.log1p(np.clip(obs, 0, None))
    gap = np.where(ly >= lp[..., 1], lp[..., 2] - lp[..., 1], lp[..., 1] - lp[..., 0])
    return np.abs(ly - lp[..., 1]) / np.maximum(gap, 1e-6)


def earlier_inits(t: np.datetime64, every_h: int, window_days: float, leads: int,
                  not_before: np.datetime64 | None = None) -> np.ndarray:
    """The inits before t on t's cadence (every `every_h` hours) with a forecast valid inside the trailing window
    at t, (t - window, t]: what `band_factors` at t can use, oldest first (datetime64[h]); with `not_before`
    (e.g. the first init the data hold a full history for) only those from then on."""
    t = np.datetime64(t, "h")
    n = (round(window_days * 24) + leads - 1) // every_h
    out = t - np.arange(n, 0, -1) * every_h * HOUR
    return out if not_before is None else out[out >= np.datetime64(not_before, "h")]


def in_window(inits: np.ndarray, leads: int, t: np.datetime64, window_days: float) -> np.ndarray:
    """[M, L]: which leads of the forecasts issued at `inits` are valid inside the trailing window (t - window, t]
    (lead l valid at init + l + 1 h): those verified by t that the factor at t uses."""
    valid = inits.astype("datetime64[h]")[:, None] + (np.arange(leads) + 1) * HOUR
    t = np.datetime64(t, "h")
    return (valid <= t) & (valid > t - np.timedelta64(round(window_days * 24), "h"))


def band_factors(inits: np.ndarray, z: np.ndarray, history_inits: np.ndarray | None = None,
                 history_z: np.ndarray | None = None, window_days: float = 30.0, target: float = 0.8,
                 prior_n: int = 2000, bounds: tuple[float, float] = (0.5, 2.0)) -> np.ndarray:
    """Factor k [N, species] for each init in `inits` from verified forecasts (this batch and `history_*`).

    z [N, L, species, S]: `band_z` of the forecasts issued at `inits` (lead l valid at init + l + 1 h)."""
    if history_inits is not None and history_z is not None and len(history_inits):
        all_t, all_z = np.concatenate([history_inits, inits]), np.concatenate([history_z, z])
    else:
        all_t, all_z = inits, z
    n_l, n_sp = z.shape[1], z.shape[2]
    out = np.ones((inits.size, n_sp))
    for i, t in enumerate(inits.astype("datetime64[h]")):
        sel = in_window(all_t, n_l, t, window_days)  # [M, L]
        if not sel.any():
            continue
        zs = all_z[sel]  # [n, species, S]
        for s in range(n_sp):
            v = zs[:, s].ravel()
            v = v[np.isfinite(v)]
            if v.size == 0:
                continue
            k = float(np.quantile(v, target))
            w = v.size / (v.size + prior_n)
            out[i, s] = float(np.clip(np.exp(w * np.log(max(k, 1e-6))), *bounds))
    return out


def apply_factors(pred: np.ndarray, k: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
    """Scale both gaps of pred [N, L, species, 3, ...] by k [N, species] in log1p space; P50 unchanged.

    `where` [...] (the trailing axes, e.g. stations or points): only there; elsewhere pred is returned as is."""
    if where is not None:
        out = pred.copy()
        out[..., where] = apply_factors(pred[..., where], k)
        return out
    lp = np.log1p(np.clip(pred, 0, None))
    kk = k.reshape(k.shape[0], 1, k.shape[1], *([1] * (pred.ndim - 4)))
    mid = lp[:, :, :, 1]
    lo = np.clip(mid - kk * (mid - lp[:, :, :, 0]), 0, None)
    hi = mid + kk * (lp[:, :, :, 2] - mid)
    out = np.expm1(np.stack([lo, mid, hi], axis=3)).astype(pred.dtype)
    out[:, :, :, 1] = pred[:, :, :, 1]  # bit for bit, not through log1p and back
    return _monotone(out)


def _monotone(q: np.ndarray) -> np.ndarray:
    """P10 <= P50 <= P90 after P50 is put back exactly (the round trip can move the edges by an ulp)."""
    q[:, :, :, 0] = np.clip(np.minimum(q[:, :, :, 0], q[:, :, :, 1]), 0, None)
    q[:, :, :, 2] = np.maximum(q[:, :, :, 2], q[:, :, :, 1])
    return q
