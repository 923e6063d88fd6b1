"""Per-channel normalisation held as model buffers, so the model takes and returns physical units.

Pollutants are normalised in log1p space (`(log1p(max(x,0)) - mean_log1p) / std_log1p`), so are the channels a
model names in `log_names` (skewed non-negative forcings such as precipitation), everything else as
`(x - mean) / std`. Channels without statistics (calendar encodings) pass through (mean 0, std 1).
"""
from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from models.config import POLLUTANTS

# channels normalised with another's statistics: the per-sample distance to the input stations takes the store's
# distance to any station (same units, the same field when no station is withheld)
STAT_ALIASES = {"input_distance_km": "station_distance_km"}
_PREFIXES = ("obs_", "stn_", "met_", "sat_", "emis_", "static_", "target_", "truth_")


def base_name(name: str) -> str:
    """`obs_pm25` -> `pm25`; names without a known prefix are returned unchanged."""
    for p in _PREFIXES:
        if name.startswith(p):
            return name[len(p):]
    return name


def channel_stats(name: str, norm_stats: Mapping[str, Mapping[str, Any]],
                  log_names: Collection[str] = ()) -> tuple[float, float, bool]:
    """(mean, std, log1p?) for one channel name, looked up as given, then by base name / common prefixes.

    A channel in `log_names` must have log1p statistics (ValueError otherwise); a pollutant without them is
    normalised linearly."""
    base = base_name(name)
    is_log = base in POLLUTANTS or name in log_names
    entry = None
    for key in (name, STAT_ALIASES.get(name, name), base, f"obs_{base}", f"stn_{base}", f"met_{base}",
                f"sat_{base}", f"emis_{base}", f"static_{base}"):
        if key in norm_stats:
            entry = norm_stats[key]
            break
    if name in log_names and "mean_log1p" not in (entry or {}):
        raise ValueError(f"{name} is to be normalised in log1p space, but the feature store holds no log1p "
                         f"statistics for it (a channel that can be negative, or a store built before they "
                         f"existed: rebuild it with `aqcast features build`)")
    if entry is None:
        return 0.0, 1.0, is_log
    if is_log and "mean_log1p" in entry:
        mean, std = float(entry["mean_log1p"]), float(entry.get("std_log1p", 1.0))
    else:
        mean, std = float(entry.get("mean", 0.0)), float(entry.get("std", 1.0))
        is_log = False  # stats given in linear space only: normalise linearly
    if not (std > 1e-6) or math.isnan(std):
        std = 1.0
    if math.isnan(mean):
        mean = 0.0
    return mean, std, is_log


# ceiling of a log channel's value on the way back (1e5 ug m-3, ~100x any hourly value on record): a net
# extrapolating far outside its training inputs gives a huge number, never inf (and an inf loss, M31)
LOG1P_CEILING = math.log1p(1e5)


def log1p_safe(x: torch.Tensor) -> torch.Tensor:
    """log(1 + max(x, 0)) written with ONNX-friendly ops."""
    return torch.log(torch.clamp(x, min=0.0) + 1.0)


class Normalizer(nn.Module):
    """Normalise a channel axis (`dim`) of physical-unit tensors; `denormalize` inverts it (physical units)."""

    def __init__(self, names: Sequence[str], norm_stats: Mapping[str, Mapping[str, Any]],
                 log_names: Collection[str] = ()):
        super().__init__()
        self.names = list(names)
        stats = [channel_stats(n, norm_stats, log_names) for n in self.names]
        self.register_buffer("mean", torch.tensor([s[0] for s in stats], dtype=torch.float32))
        self.register_buffer("std", torch.tensor([s[1] for s in stats], dtype=torch.float32))
        self.register_buffer("is_log", torch.tensor([float(s[2]) for s in stats], dtype=torch.float32))

    def _shape(self, t: torch.Tensor, ndim: int, dim: int) -> torch.Tensor:
        shape = [1] * ndim
        shape[dim] = -1
        return t.reshape(shape)

    def forward(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """Physical -> normalised along channel axis `dim`."""
        nd = x.dim()
        dim = dim % nd
        is_log = self._shape(self.is_log, nd, dim) > 0.5
        xt = torch.where(is_log, log1p_safe(x), x)
        return (xt - self._shape(self.mean, nd, dim)) / self._shape(self.std, nd, dim)

    def denormalize(self, z: torch.Tensor, dim: int) -> torch.Tensor:
        """Normalised -> physical along channel axis `dim` (log channels: expm1, at most expm1(`LOG1P_CEILING`))."""
        nd = z.dim()
        dim = dim % nd
        xt = z * self._shape(self.std, nd, dim) + self._shape(self.mean, nd, dim)
        is_log = self._shape(self.is_log, nd, dim) > 0.5
        # no exp of linear channels (inf * 0 = NaN), none above the ceiling
        safe = torch.where(is_log, torch.clamp(xt, max=LOG1P_CEILING), torch.zeros_like(xt))
        return torch.where(is_log, torch.exp(safe) - 1.0, xt)

    def as_dict(self) -> dict[str, dict[str, float]]:
        """Statistics by channel name (for model cards and tests)."""
        return {n: {"mean": float(m), "std": float(s), "log1p": bool(g)}
                for n, m, s, g in zip(self.names, self.mean, self.std, self.is_log)}
