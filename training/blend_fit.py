"""The P50's blend toward a cell's own init-hour observation, fitted after training (`optim.persistence_blend_every_h`).

Why: with the station drop-out, the persistence skip's weight per lead is shared by cells that observed the init
hour and cells that only see it spread from neighbours, and at its input stations the network was ~10 % worse than
persistence at +1 h (three seeds, docs/experiments-beijing-24.md). Giving observed cells their own trained weight
(`model.skip_observed`) fixed that but cost the held-out stations. Here a per-lead, per-species weight a in [0, 1]
moves the P50 toward the observation where the cell has one, P50 + a (obs - P50) in the targets' normalised log
space (`QuantileFrame.persistence_blend`), and leaves every other cell (held-out stations, the rest of the grid)
as it was. It is fitted on training-period inits at the input stations, none withheld, by the mean absolute error
of the P50 in that space: the validation year stays out of the P50. The network has seen those inits, so the
weights tend to come out smaller than a later year's data would pick (measured on three seeds: 0.41-0.44 against
0.51-0.56 for PM2.5 at +1 h). A buffer of the model (`p50_persist`), so the
ONNX artifact carries it; fitted before the P10/P90 calibration, which then fits the blended P50's band.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from training.module import INPUTS, station_forward

GRID = np.round(np.linspace(0.0, 1.0, 101), 2)
REPORT_LEADS = (1, 2, 3, 6, 12, 24, 48, 72)


def fit_weights(p: np.ndarray, last: np.ndarray, t: np.ndarray, grid: np.ndarray = GRID) -> np.ndarray:
    """p, t [N, L, 2, S] forecast and observation, last [N, 2, S] the init-hour observation (NaN: none), all in
    one affine image of log1p per species (log1p itself or the normalised space) -> the a in `grid` per lead and
    species minimising mean |t - (p + a (last - p))| over the samples where all three exist (0 without any)."""
    last_l = np.broadcast_to(last[:, None], p.shape)
    ok = np.isfinite(p) & np.isfinite(last_l) & np.isfinite(t)
    a = np.zeros(p.shape[1:3])
    for lead in range(p.shape[1]):
        for s in range(p.shape[2]):
            k = ok[:, lead, s]
            if k.any():
                x, y, o = p[:, lead, s][k], last_l[:, lead, s][k], t[:, lead, s][k]
                cost = np.abs(o[None] - (x[None] + grid[:, None] * (y - x)[None])).mean(axis=1)
                a[lead, s] = grid[int(np.argmin(cost))]
    return a


def apply_weights(p: np.ndarray, last: np.ndarray, a: np.ndarray) -> np.ndarray:
    """p [N, L, 2, S], last [N, 2, S] (NaN: the cell did not observe the init hour), a [L, 2] -> p + a (last - p)
    where `last` exists, p elsewhere: `QuantileFrame.persistence_blend` in numpy, in the space the inputs are in."""
    last_l = np.broadcast_to(last[:, None], p.shape)
    return np.where(np.isfinite(last_l), p + a[None, :, :, None] * (last_l - p), p)


def collect(net: Any, loader: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run `net` (no blend) over `loader` -> P50 and observation [N, L, 2, S] and the init-hour value of the
    model's skip at the station's cell [N, 2, S] (NaN where the cell did not observe it), in the targets'
    normalised log space: exactly what `QuantileFrame.persistence_blend` moves the P50 toward."""
    net.p50_persist.zero_()
    if min(getattr(net, "lead", net).species_idx) < 0:
        raise ValueError("the P50 blend needs both target species among the model's observation channels")
    n_sp = net.p50_persist.shape[1]
    ps, lasts, ts = [], [], []
    with torch.no_grad():
        for batch in loader:
            row, col = batch["station_row"].long(), batch["station_col"].long()
            p50, _, _, base = station_forward(net, *(batch[k] for k in INPUTS), row, col, parts=True, base_too=True)
            ok = batch["target_mask"] > 0.5
            t = net.target_norm(torch.where(ok, batch["target"], torch.zeros_like(batch["target"])).clamp(min=0), dim=2)
            last, seen = base[:, :n_sp], net.observed_at_init(base) > 0.5  # what the blend moves toward, and where
            ps.append(p50.numpy())
            ts.append(torch.where(ok, t, torch.full_like(t, float("nan"))).numpy())
            lasts.append(torch.where(seen, last, torch.full_like(last, float("nan"))).numpy())
    return np.concatenate(ps), np.concatenate(lasts), np.concatenate(ts)


def fit_persistence_blend(net: Any, loader: Any) -> dict[str, Any]:
    """Fit `net.p50_persist` on `loader` (in place) -> a report: the weights and the in-sample mean absolute
    error of the P50 (normalised log space) at the observed samples, before and after, at `REPORT_LEADS`."""
    p, last, t = collect(net, loader)
    a = fit_weights(p, last, t)
    net.p50_persist.copy_(torch.as_tensor(a, dtype=net.p50_persist.dtype))
    ok = np.isfinite(last[:, None]) & np.isfinite(t)
    blended = apply_weights(p, last, a)
    leads = [ld for ld in REPORT_LEADS if ld <= p.shape[1]]

    def mae(x: np.ndarray) -> list[list[float]]:
        err = np.where(ok, np.abs(t - x), 0.0).sum(axis=(0, 3)) / np.maximum(ok.sum(axis=(0, 3)), 1)
        return [[round(float(err[ld - 1, s]), 4) for s in range(2)] for ld in leads]

    return {"method": "P50 + a (init-hour observation - P50) at cells that observed it, a in [0, 1] per lead and "
                      "species, fitted on training-period inits at the input stations (none withheld) by the mean "
                      "absolute error in the targets' normalised log space",
            "n_inits": int(p.shape[0]), "n_observed_at_init": int(np.isfinite(last).sum()),
            "p50_persist": np.round(a, 2).tolist(), "report_leads": leads,
            "mae_norm_in_sample_before": mae(p), "mae_norm_in_sample_after": mae(blended)}


def fit_after_training(cfg: Any, module: Any, dm: Any, echo: Callable[[str], None] = print) -> dict[str, Any] | None:
    """`optim.persistence_blend_every_h` set: fit the blend on the training period, log it to the active MLflow
    run (persistence_blend.json, the weights at +1 h) and return its summary for the model's metadata."""
    every = cfg.optim.persistence_blend_every_h
    if not every:
        return None
    import mlflow

    module.eval()
    loader = dm.train_period_dataloader(every)
    echo(f"fitting the P50's blend toward the init-hour observation on {len(loader.dataset)} training inits "
         f"every {every} h ...")
    rep = fit_persistence_blend(module.net, loader)
    mlflow.log_dict(rep, "persistence_blend.json")
    a = rep["p50_persist"]
    mlflow.log_metrics({"p50_persist_pm25_h1": a[0][0], "p50_persist_o3_h1": a[0][1]})
    echo("P50 blend toward the init-hour observation, weight at " + ", ".join(
        f"+{ld} h {a[ld - 1][0]:.2f} / {a[ld - 1][1]:.2f}" for ld in rep["report_leads"][:4]) + " (PM2.5 / O3)")
    return {k: rep[k] for k in ("method", "n_inits", "p50_persist")}
