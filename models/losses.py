"""Quantile (pinball) loss on a gridded forecast, gathered at the station cells, masked exactly."""
from __future__ import annotations

from collections.abc import Sequence

import torch

SPACES = ("log1p", "sqrt", "linear")


def transform(x: torch.Tensor, space: str) -> torch.Tensor:
    """Variance-stabilising transform applied to both prediction and target (monotone, so quantiles map)."""
    if space == "log1p":
        return torch.log1p(torch.clamp(x, min=0.0))
    if space == "sqrt":
        return torch.sqrt(torch.clamp(x, min=0.0) + 1e-6)
    if space == "linear":
        return x
    raise ValueError(f"unknown loss space {space!r}; expected one of {SPACES}")


def gather_stations(pred: torch.Tensor, station_row: torch.Tensor, station_col: torch.Tensor) -> torch.Tensor:
    """pred [B, L, 2, Q, Y, X] -> [B, L, 2, Q, S] at (row, col) of each station (indices clipped to the grid)."""
    b, n_l, n_sp, n_q, ny, nx = pred.shape
    row = station_row.long().clamp(0, ny - 1)
    col = station_col.long().clamp(0, nx - 1)
    idx = (row * nx + col)  # [B, S]
    flat = pred.reshape(b, n_l, n_sp, n_q, ny * nx)
    idx = idx[:, None, None, None, :].expand(b, n_l, n_sp, n_q, idx.shape[-1])
    return torch.gather(flat, 4, idx)


def masked_pinball(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, station_row: torch.Tensor,
                   station_col: torch.Tensor, quantiles: Sequence[float] = (0.1, 0.5, 0.9),
                   space: str = "log1p", species_weight: Sequence[float] | None = None,
                   species_scale: Sequence[float] | None = None,
                   station_weight: torch.Tensor | None = None, level_power: float = 0.0) -> torch.Tensor:
    """Mean pinball loss over observed (mask==1) station/lead/species entries and quantiles.

    pred [B, L, 2, Q, Y, X] (ug m-3), target/mask [B, L, 2, S], station_row/col [B, S] (or [S]).
    Entries with mask==0 contribute neither value nor gradient, whatever their target (NaN included).
    `space`: loss computed after `transform` (log1p default; see `training.baseline_report` for the
    comparison). `species_scale` (ug m-3 per species, default 1): prediction and target are divided by it
    before the transform, so with log1p an error counts about absolutely below that level and relatively above.
    `station_weight` [B, S] (default 1): each station's entries weigh that much in the weighted mean.
    `level_power` g > 0: each entry also weighs (1 + the forecast's own P50, detached)^g, normalised to a mean of 1
    per species over the observed entries: high-concentration cases count more, as they do in an MAE in ug m-3,
    while the weight depends on the inputs only (not the target), so the loss is still minimised by each
    quantile of the target given the inputs (`level_weights`).
    Returns 0 (with grad) when nothing is observed.
    """
    if station_row.dim() == 1:
        station_row = station_row.unsqueeze(0).expand(pred.shape[0], -1)
        station_col = station_col.unsqueeze(0).expand(pred.shape[0], -1)
    p = gather_stations(pred, station_row, station_col)  # [B, L, 2, Q, S]
    keep = (mask > 0.5).unsqueeze(3)  # [B, L, 2, 1, S]
    p_raw = p
    t = torch.where(mask > 0.5, target, torch.zeros_like(target)).unsqueeze(3)
    if species_scale is not None:
        sc = torch.as_tensor(list(species_scale), dtype=p.dtype, device=p.device).reshape(1, 1, -1, 1, 1)
        p, t = p / sc, t / sc
    p, t = transform(p, space), transform(t, space)
    q = torch.as_tensor(list(quantiles), dtype=p.dtype, device=p.device).reshape(1, 1, 1, -1, 1)
    err = torch.where(keep, t - p, torch.zeros_like(p))
    loss = torch.maximum(q * err, (q - 1.0) * err)
    w = keep.to(p.dtype).expand_as(loss)
    if level_power > 0:
        lw = level_weights(p_raw, keep, list(quantiles).index(0.5), level_power)
        loss, w = loss * lw, w * lw
    if species_weight is not None:
        sw = torch.as_tensor(list(species_weight), dtype=p.dtype, device=p.device).reshape(1, 1, -1, 1, 1)
        loss, w = loss * sw, w * sw
    if station_weight is not None:
        stw = station_weight.to(p.dtype).reshape(station_weight.shape[0], 1, 1, 1, -1)
        loss, w = loss * stw, w * stw
    return loss.sum() / torch.clamp(w.sum(), min=1.0)


def level_weights(p: torch.Tensor, keep: torch.Tensor, median_idx: int, power: float) -> torch.Tensor:
    """Station quantiles p [B, L, 2, Q, S] (ug m-3) and the observed entries keep [B, L, 2, 1, S] -> weights
    [B, L, 2, 1, S]: (1 + P50)^power from the detached P50, divided by their mean over each species' observed
    entries (1 where nothing is observed)."""
    lw = (1.0 + p[:, :, :, median_idx:median_idx + 1].detach().clamp(min=0.0)) ** power
    k = keep.to(lw.dtype)
    mean = (lw * k).sum(dim=(0, 1, 3, 4), keepdim=True) / k.sum(dim=(0, 1, 3, 4), keepdim=True).clamp(min=1.0)
    return torch.where(mean > 0, lw / mean.clamp(min=1e-12), torch.ones_like(lw))
