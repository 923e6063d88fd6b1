"""Forecast verification (numpy). Canonical layout, as in the WindowSampler target:
`obs [N, L, 2, S]` (NaN = missing), point forecast `p50 [N, L, 2, S]`, quantiles `pred [N, L, 2, Q, S]`
(Q = p10, p50, p90). N = init times, L = leads (1..L h), species order (pm25, o3), S = stations.

Definitions:
- MAE, RMSE, bias (forecast - obs), Pearson correlation by lead and species over all valid (N, S) pairs.
- skill vs a reference = 1 - MAE / MAE_ref, on the pairs where both forecasts and the observation exist.
- hourly exceedance events on the hourly value: PM2.5 > 75 (24-h Grade II limit applied hourly),
  O3 > 160 (the 8-h limit applied hourly, as specified) and O3 > 200 (the 1-h Grade II limit). Contingency
  H/M/F -> CSI = H/(H+M+F), POD = H/(H+M), FAR = F/(H+F); NaN when undefined.
- daily events: day k (k = 1..L/24) = mean over leads 24(k-1)+1 .. 24k (the 24 h after init; equals the
  calendar day when init is local midnight, as in the backtest), valid when >= 18 of the 24 obs exist;
  event = daily-mean PM2.5 > 75.
- coverage: share of observations inside [p10, p90] (0.8 when calibrated).
- AQI class accuracy: HJ 633 category of the p50 vs the observed, per species (hourly IAQI).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from features.aqi import category, iaqi

SPECIES = ("pm25", "o3")
HOURLY_EVENTS = {"pm25_gt75": (0, 75.0), "o3_gt160": (1, 160.0), "o3_gt200": (1, 200.0)}
DAILY_MIN_HOURS = 18


def _valid(p: np.ndarray, o: np.ndarray) -> np.ndarray:
    return np.isfinite(p) & np.isfinite(o)


def basic_scores(p50: np.ndarray, obs: np.ndarray) -> dict[str, np.ndarray]:
    """{'mae','rmse','bias','corr','n'} each [L, 2]."""
    v = _valid(p50, obs)
    n = v.sum(axis=(0, 3)).astype(float)
    err = np.where(v, p50 - obs, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mae = np.abs(err).sum(axis=(0, 3)) / n
        rmse = np.sqrt((err ** 2).sum(axis=(0, 3)) / n)
        bias = err.sum(axis=(0, 3)) / n
        pm = np.where(v, p50, 0.0).sum(axis=(0, 3)) / n
        om = np.where(v, obs, 0.0).sum(axis=(0, 3)) / n
        dp = np.where(v, p50 - pm[None, :, :, None], 0.0)
        do = np.where(v, obs - om[None, :, :, None], 0.0)
        corr = (dp * do).sum(axis=(0, 3)) / np.sqrt((dp ** 2).sum(axis=(0, 3)) * (do ** 2).sum(axis=(0, 3)))
    return {"mae": mae, "rmse": rmse, "bias": bias, "corr": corr, "n": n}


def mae_skill(p50: np.ndarray, ref: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """1 - MAE/MAE_ref by [L, 2], on pairs where forecast, reference and observation all exist."""
    v = _valid(p50, obs) & np.isfinite(ref)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.where(v, np.abs(p50 - obs), 0.0).sum(axis=(0, 3))
        b = np.where(v, np.abs(ref - obs), 0.0).sum(axis=(0, 3))
        return 1.0 - a / b


def contingency(fc: np.ndarray, ob: np.ndarray, threshold: float, axis=None) -> dict[str, np.ndarray]:
    """Event = value > threshold. Returns hits, misses, false_alarms, correct_negatives, csi, pod, far."""
    v = _valid(fc, ob)
    fe, oe = (fc > threshold) & v, (ob > threshold) & v
    h = (fe & oe).sum(axis=axis)
    m = (~fe & oe & v).sum(axis=axis)
    f = (fe & ~oe & v).sum(axis=axis)
    cn = (~fe & ~oe & v).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        h_, m_, f_ = (np.asarray(x, dtype=float) for x in (h, m, f))
        csi = h_ / (h_ + m_ + f_)
        pod = h_ / (h_ + m_)
        far = f_ / (h_ + f_)
    return {"hits": h, "misses": m, "false_alarms": f, "correct_negatives": cn, "csi": csi, "pod": pod,
            "far": far}


def daily_means(x: np.ndarray, min_hours: int = DAILY_MIN_HOURS) -> np.ndarray:
    """[N, L, ...] -> [N, L // 24, ...] means over consecutive 24-lead blocks; NaN with < min_hours values."""
    n_days = x.shape[1] // 24
    blocks = x[:, : n_days * 24].reshape(x.shape[0], n_days, 24, *x.shape[2:])
    cnt = np.isfinite(blocks).sum(axis=2)
    fin = np.isfinite(blocks)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(fin, blocks, 0.0).sum(axis=2) / cnt
    return np.where(cnt >= min_hours, mean, np.nan)


def coverage(pred: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """Share of observations within [p10, p90] by [L, 2]."""
    lo, hi = pred[:, :, :, 0], pred[:, :, :, -1]
    v = np.isfinite(obs) & np.isfinite(lo) & np.isfinite(hi)
    inside = v & (obs >= lo) & (obs <= hi)
    with np.errstate(invalid="ignore", divide="ignore"):
        return inside.sum(axis=(0, 3)) / v.sum(axis=(0, 3))


def quantile_score(pred: np.ndarray, obs: np.ndarray, quantiles=(0.1, 0.5, 0.9)) -> np.ndarray:
    """Mean pinball loss over the quantiles by [L, 2] (2x this approximates CRPS for many quantiles)."""
    out = []
    for k, q in enumerate(quantiles):
        e = obs - pred[:, :, :, k]
        v = np.isfinite(e)
        loss = np.where(v, np.maximum(q * e, (q - 1) * e), 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(loss.sum(axis=(0, 3)) / v.sum(axis=(0, 3)))
    return np.mean(out, axis=0)


def aqi_class_accuracy(p50: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """Share of valid pairs whose HJ 633 category (hourly IAQI of that species) matches, by [L, 2]."""
    out = np.full(p50.shape[1:3], np.nan)
    for i, sp in enumerate(SPECIES):
        p, o = p50[:, :, i], obs[:, :, i]
        v = _valid(p, o)
        same = (category(iaqi(np.where(v, p, 0), sp)) == category(iaqi(np.where(v, o, 0), sp))) & v
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, i] = same.sum(axis=(0, 2)) / v.sum(axis=(0, 2))
    return out


def evaluate_forecast(pred: np.ndarray, obs: np.ndarray, refs: Mapping[str, np.ndarray] | None = None
                      ) -> dict[str, np.ndarray]:
    """All by-lead scores of one forecast: dict name -> [L, 2] (event scores -> [L] for their species,
    daily scores -> [L // 24]). `refs`: name -> reference p50 [N, L, 2, S] for skill."""
    p50 = pred[:, :, :, pred.shape[3] // 2]
    res = basic_scores(p50, obs)
    res["coverage_p10_p90"] = coverage(pred, obs)
    res["quantile_score"] = quantile_score(pred, obs)
    res["aqi_class_accuracy"] = aqi_class_accuracy(p50, obs)
    for name, ref in (refs or {}).items():
        res[f"skill_vs_{name}"] = mae_skill(p50, ref, obs)
    for ev, (i, thr) in HOURLY_EVENTS.items():
        c = contingency(p50[:, :, i], obs[:, :, i], thr, axis=(0, 2))
        for k in ("csi", "pod", "far", "hits", "misses", "false_alarms"):
            res[f"{ev}_{k}"] = np.asarray(c[k], dtype=float)
    if p50.shape[1] >= 24:
        d = contingency(daily_means(p50[:, :, 0]), daily_means(obs[:, :, 0]), 75.0, axis=(0, 2))
        for k in ("csi", "pod", "far", "hits", "misses", "false_alarms"):
            res[f"daily_pm25_gt75_{k}"] = np.asarray(d[k], dtype=float)
    return res


def to_rows(scores: Mapping[str, np.ndarray], group: str, model: str) -> list[dict[str, object]]:
    """Flatten `evaluate_forecast` output to tidy rows {model, group, metric, species, lead|day, value}."""
    rows: list[dict[str, object]] = []
    for metric, arr in scores.items():
        a = np.asarray(arr, dtype=float)
        if metric.startswith("daily_"):
            rows += [{"model": model, "group": group, "metric": metric, "species": "pm25", "day": d + 1,
                      "lead": None, "value": float(a[d])} for d in range(a.shape[0])]
        elif a.ndim == 1:
            sp = "pm25" if metric.startswith("pm25") else "o3"
            rows += [{"model": model, "group": group, "metric": metric, "species": sp, "lead": ld + 1,
                      "day": None, "value": float(a[ld])} for ld in range(a.shape[0])]
        else:
            rows += [{"model": model, "group": group, "metric": metric, "species": SPECIES[s], "lead": ld + 1,
                      "day": None, "value": float(a[ld, s])} for ld in range(a.shape[0]) for s in range(2)]
    return rows
