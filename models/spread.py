"""Normalized convolution: spreads sparse, masked station values into smooth fields plus confidence.

For each Gaussian scale sigma (cells, peak-1 kernel, separable, truncated at `truncate * sigma`):
  value = conv(v * m) / (conv(m) + eps),   conf = conv(m) / (1 + conv(m))
`conv(m)` is the kernel-weighted number of observations nearby, so `conf` is ~0 far from stations and the
value relaxes to 0 (the normalised mean). Works for any station set and any grid size (zero padding = no data
outside), is local (limited receptive field, tileable) and ONNX-exportable (banded matmuls built from the grid's shape).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
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
        # the kernels as saved buffers (layout kept from the earlier convolution form, so old weights load)
        self.register_buffer("ky", k.reshape(n, 1, length, 1).repeat(2, 1, 1, 1))
        self.register_buffer("kx", k.reshape(n, 1, 1, length).repeat(2, 1, 1, 1))

    def _toeplitz(self, n: int) -> torch.Tensor:
        """[n_scales, n, n] banded matrices T[s, i, j] = k_s(i - j): a 1-D blur with zero padding."""
        k = self.ky[: self.n_scales, 0, :, 0]  # [n_scales, K]
        i = torch.arange(n, device=k.device)
        d = i[:, None] - i[None, :] + self.half
        inside = (d >= 0) & (d < k.shape[-1])
        return torch.where(inside, k[:, d.clamp(0, k.shape[-1] - 1)], torch.zeros((), dtype=k.dtype))

    def _blur(self, a: torch.Tensor) -> torch.Tensor:
        """a [N, 2, Y, X] -> [N, 2, n_scales, Y, X]: separable blur as two banded matrix products.

        Same numbers as the padded separable convolution, ~10x faster on CPU for a city grid (31 x 26) and
        ~3x for a 218-cell tile: BLAS matmuls instead of long, grouped 1-D kernels (docs/decisions.md).
        """
        ty, tx = self._toeplitz(a.shape[-2]), self._toeplitz(a.shape[-1])
        out = torch.einsum("syk,nckx->ncsyx", ty, a)
        return torch.einsum("ncsyx,sjx->ncsyj", out, tx)

    def forward(self, value: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if torch.is_autocast_enabled(value.device.type):  # weight-free: float32 under mixed-precision training
            with torch.autocast(value.device.type, enabled=False):
                return self.forward(value.float(), mask.float())
        a = torch.stack([value * mask, mask], dim=1)  # [N, 2, Y, X]
        out = self._blur(a)
        num, den = out[:, 0], torch.clamp(out[:, 1], min=0.0)
        return num / (den + self.eps), den / (den + 1.0)
