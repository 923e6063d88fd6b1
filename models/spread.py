"""Normalized convolution: spreads sparse, masked station values into smooth fields plus confidence.

For each Gaussian scale sigma (cells, peak-1 kernel, separable, truncated at `truncate * sigma`):
  value = conv(v * m) / (conv(m) + eps),   conf = conv(m) / (1 + conv(m))
`conv(m)` is the kernel-weighted number of observations nearby, so `conf` is ~0 far from stations and the
value relaxes to 0 (the normalised mean). Works for any station set and any grid size (zero padding = no data
outside), is fully convolutional (limited receptive field, tileable) and ONNX-exportable (plain Conv).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def gaussian_kernels(sigmas: Sequence[float], truncate: float) -> torch.Tensor:
    """[n_scales, K] peak-1 1-D Gaussian kernels, zero-padded to a common odd length K."""
    half = max(math.ceil(truncate * s) for s in sigmas)
    d = torch.arange(-half, half + 1, dtype=torch.float32)
    rows = []
    for s in sigmas:
        k = torch.exp(-0.5 * (d / s) ** 2)
        k[d.abs() > math.ceil(truncate * s)] = 0.0
        rows.append(k)
    return torch.stack(rows)


class NormalizedConv(nn.Module):
    """Maps value [N, Y, X] and mask [N, Y, X] to (values, confidences), each [N, n_scales, Y, X]."""

    def __init__(self, sigmas: Sequence[float], truncate: float = 3.0, eps: float = 1e-3):
        super().__init__()
        k = gaussian_kernels(sigmas, truncate)
        n, length = k.shape
        self.n_scales = n
        self.half = length // 2
        self.eps = eps
        # first pass: one input map -> n_scales maps (along y); second pass depthwise along x
        # (value, mask) pairs: weights pre-repeated for the 2 input maps (static shapes for ONNX)
        self.register_buffer("ky", k.reshape(n, 1, length, 1).repeat(2, 1, 1, 1))
        self.register_buffer("kx", k.reshape(n, 1, 1, length).repeat(2, 1, 1, 1))

    def _blur(self, a: torch.Tensor) -> torch.Tensor:
        """a [N, 2, Y, X] -> [N, 2 * n_scales, Y, X] (channel order: input-major)."""
        # groups=2 with n_scales outputs per group: weight [2 * n_scales, 1, K, 1]
        out = F.conv2d(a, self.ky, padding=(self.half, 0), groups=2)
        out = F.conv2d(out, self.kx, padding=(0, self.half), groups=2 * self.n_scales)
        return out

    def forward(self, value: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = torch.stack([value * mask, mask], dim=1)  # [N, 2, Y, X]
        out = self._blur(a)
        num, den = out[:, : self.n_scales], out[:, self.n_scales:]
        den = torch.clamp(den, min=0.0)
        return num / (den + self.eps), den / (den + 1.0)
