"""Augmentation of training batches: mirrored grids (`optim.mirror_prob`) and noisy observations
(`optim.obs_noise`).

A batch's grid is flipped west-east and/or north-south, each with probability `mirror_prob`, and the wind
components are negated to match (u with a west-east flip, v with a north-south one), so that the wind still
blows from the same upwind cells and the station cells move with the grid. The network sees its stations in
mirrored worlds with the same physics and another geography, instead of memorising the one layout it trains
on. Terrain, emissions and every other field flip with the grid; station-indexed targets do not move.

Observation noise multiplies every observed input value of the history by exp(sigma * N(0, 1)), drawn per value
(a station's hour), so the network cannot read the forecast off one exact reading: it has to weigh the hours and
the neighbours, as it must where a cell has no station. Targets and masks are untouched; unobserved values are 0
and stay 0.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from models.normalize import base_name

GRID_KEYS = ("obs", "obs_mask", "forcing", "forcing_mask", "static")  # [..., Y, X]
EAST_COMPONENTS = ("u10", "u100")  # wind components along x, negated by a west-east flip
NORTH_COMPONENTS = ("v10", "v100")  # wind components along y, negated by a north-south flip


def wind_channels(forcing_names: Sequence[str]) -> tuple[list[int], list[int]]:
    """Indices of the forcing channels that are east (u) and north (v) wind components."""
    bases = [base_name(n) for n in forcing_names]
    return ([i for i, b in enumerate(bases) if b in EAST_COMPONENTS],
            [i for i, b in enumerate(bases) if b in NORTH_COMPONENTS])


def mirror_batch(batch: dict[str, torch.Tensor], flip_y: bool, flip_x: bool, u_idx: Sequence[int],
                 v_idx: Sequence[int]) -> dict[str, torch.Tensor]:
    """A copy of `batch` with its grid flipped along y and/or x (forcing channels `u_idx` negated with x,
    `v_idx` with y; station_row / station_col moved with the grid). Other keys are shared, not copied."""
    if not (flip_y or flip_x):
        return batch
    dims = [d for d, f in ((-2, flip_y), (-1, flip_x)) if f]
    out = dict(batch)
    for k in GRID_KEYS:
        if k in batch:
            out[k] = torch.flip(batch[k], dims)
    negate = [i for idx, f in ((u_idx, flip_x), (v_idx, flip_y)) if f for i in idx]
    if negate:
        sign = torch.ones(out["forcing"].shape[2], dtype=out["forcing"].dtype, device=out["forcing"].device)
        sign[negate] = -1.0
        out["forcing"] = out["forcing"] * sign.reshape(1, 1, -1, 1, 1)
    ny, nx = batch["obs"].shape[-2], batch["obs"].shape[-1]
    if flip_y:
        out["station_row"] = (ny - 1) - batch["station_row"]
    if flip_x:
        out["station_col"] = (nx - 1) - batch["station_col"]
    return out


def random_mirror(batch: dict[str, torch.Tensor], prob: float, u_idx: Sequence[int],
                  v_idx: Sequence[int]) -> dict[str, torch.Tensor]:
    """`mirror_batch` with each axis flipped with probability `prob` (torch's global generator, which the
    training seed sets); `prob` 0 draws nothing and returns the batch itself."""
    if prob <= 0:
        return batch
    flip_y, flip_x = (torch.rand(2) < prob).tolist()
    return mirror_batch(batch, flip_y, flip_x, u_idx, v_idx)


def noisy_obs(batch: dict[str, torch.Tensor], sigma: float) -> dict[str, torch.Tensor]:
    """A copy of `batch` whose `obs` is multiplied by exp(`sigma` N(0, 1)) per value (torch's global generator,
    which the training seed sets); `sigma` 0 draws nothing and returns the batch itself."""
    if sigma <= 0:
        return batch
    out = dict(batch)
    out["obs"] = batch["obs"] * torch.exp(sigma * torch.randn_like(batch["obs"]))
    return out
