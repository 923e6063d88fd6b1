"""Post-hoc calibration of the P10-P90 band: per-lead, per-species scales of the lower and upper gaps.

Pinball training gives quantiles that are calibrated on the training years; on a later year (Beijing's air
got cleaner and its ozone higher from 2013 to 2016) the band came out too narrow for O3 and too wide for
PM2.5 at short leads. After training, the gaps (P50 - P10 and P90 - P50 in the normalised log space) are
scaled so that 10 % of the validation observations at *input* stations fall below P10 and 10 % above P90, at
each lead (smoothed over neighbouring leads) and species, a split-conformal step. The scales are a buffer of
the model (`gap_scale`), so the exported ONNX artifact carries them. Held-out stations are never used, and a
two-fold cross-fit by calendar month (fit on even months, score on odd, and back) estimates the coverage the
calibration gives on data it has not seen.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from training.module import INPUTS, station_forward

MIN_SAMPLES = 50


def collect_ratios(net: Any, loader: Any) -> dict[str, np.ndarray]:
    """Run `net` (its gap scales reset to 1) over `loader`: r_lo = (P50 - obs) / lower gap and r_hi =
    (obs - P50) / upper gap in normalised space, each [N, L, 2, S]; `valid` (observed at an input station)
    and the init `month` [N]."""
    net.gap_scale.fill_(1.0)
    r_lo, r_hi, valid, month = [], [], [], []
    with torch.no_grad():
        for batch in loader:
            p50, g_lo, g_hi = station_forward(net, *(batch[k] for k in INPUTS), batch["station_row"],
                                              batch["station_col"], parts=True)
            ok = (batch["target_mask"] > 0.5) & (batch["station_in_input"][:, None, None] > 0.5)
            t = torch.where(ok, batch["target"], torch.zeros_like(batch["target"])).clamp(min=0)
            tz = net.target_norm(t, dim=2)
            r_lo.append(((p50 - tz) / g_lo.clamp(min=1e-6)).numpy())
            r_hi.append(((tz - p50) / g_hi.clamp(min=1e-6)).numpy())
            valid.append(ok.numpy())
            init = batch["init_time"].numpy().astype("datetime64[ns]")
            month.append(init.astype("datetime64[M]").astype(np.int64) % 12)
    return {"r_lo": np.concatenate(r_lo), "r_hi": np.concatenate(r_hi), "valid": np.concatenate(valid),
            "month": np.concatenate(month)}


def _smooth(a: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average along axis 0 (edges: mean of what is inside the window)."""
    if width <= 1:
        return a
    k = np.ones(width)
    half = width // 2
    pad = np.pad(a, [(half, half)] + [(0, 0)] * (a.ndim - 1), mode="edge")
    out = np.empty_like(a)
    flat, fout = pad.reshape(pad.shape[0], -1), out.reshape(a.shape[0], -1)
    for j in range(flat.shape[1]):
        fout[:, j] = np.convolve(flat[:, j], k, mode="valid") / width
    return out


def fit_scales(r: dict[str, np.ndarray], sel: np.ndarray | None = None, quantiles: tuple[float, ...] =
               (0.1, 0.5, 0.9), smooth: int = 7, bounds: tuple[float, float] = (0.25, 4.0)) -> np.ndarray:
    """Gap scales [L, 2, 2] (lead, species, lower/upper) that put `quantiles[0]` of the observations below P10
    and 1 - `quantiles[-1]` above P90 on the samples `sel` (bool [N]; None = all)."""
    q_lo, q_hi = quantiles[0], quantiles[-1]
    keep = r["valid"] if sel is None else r["valid"] & sel[:, None, None, None]
    n_l, n_sp = keep.shape[1], keep.shape[2]
    out = np.ones((n_l, n_sp, 2))
    for lead in range(n_l):
        for k in range(n_sp):
            m = keep[:, lead, k]
            if m.sum() < MIN_SAMPLES:
                continue
            out[lead, k, 0] = np.quantile(r["r_lo"][:, lead, k][m], 1 - q_lo)
            out[lead, k, 1] = np.quantile(r["r_hi"][:, lead, k][m], q_hi)
    return np.clip(_smooth(out, smooth), *bounds)


def coverage(r: dict[str, np.ndarray], scales: np.ndarray, sel: np.ndarray | None = None) -> np.ndarray:
    """P10-P90 coverage [L, 2] of the band with `scales` on samples `sel` (NaN where nothing is observed)."""
    keep = r["valid"] if sel is None else r["valid"] & sel[:, None, None, None]
    inside = (r["r_lo"] <= scales[None, :, :, 0, None]) & (r["r_hi"] <= scales[None, :, :, 1, None])
    n = keep.sum((0, 3))
    return np.where(n > 0, (inside & keep).sum((0, 3)) / np.maximum(n, 1), np.nan)


def calibrate(net: Any, loader: Any, quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)) -> dict[str, Any]:
    """Fit `net.gap_scale` on `loader` (in place) and report coverage before, after (in-sample) and cross-fit."""
    r = collect_ratios(net, loader)
    scales = fit_scales(r, quantiles=quantiles)
    even = r["month"] % 2 == 0
    cv = np.full(scales.shape[:2], np.nan)
    if even.any() and (~even).any():
        cov_odd = coverage(r, fit_scales(r, even, quantiles), ~even)
        cov_even = coverage(r, fit_scales(r, ~even, quantiles), even)
        n_odd = (r["valid"] & ~even[:, None, None, None]).sum((0, 3))
        n_even = (r["valid"] & even[:, None, None, None]).sum((0, 3))
        cv = (np.nan_to_num(cov_odd) * n_odd + np.nan_to_num(cov_even) * n_even) / np.maximum(n_odd + n_even, 1)
    before = coverage(r, np.ones_like(scales))
    after = coverage(r, scales)
    net.gap_scale.copy_(torch.as_tensor(scales, dtype=net.gap_scale.dtype))
    metrics: dict[str, float] = {}
    for k, sp in enumerate(("pm25", "o3")):
        for name, arr in (("uncalibrated", before), ("calibrated", after), ("crossfit", cv)):
            col = arr[:, k]
            if np.isfinite(col).any():
                metrics[f"calib_{name}_coverage_{sp}_min"] = float(np.nanmin(col))
                metrics[f"calib_{name}_coverage_{sp}_max"] = float(np.nanmax(col))
    report = {"method": "split-conformal gap scaling on validation inits, input stations only",
              "n_inits": int(r["valid"].shape[0]), "gap_scale": scales.round(4).tolist(),
              "coverage_uncalibrated": np.round(before, 4).tolist(),
              "coverage_calibrated_in_sample": np.round(after, 4).tolist(),
              "coverage_crossfit_by_month": np.round(cv, 4).tolist()}
    return {"scales": scales, "metrics": metrics, "report": report}
