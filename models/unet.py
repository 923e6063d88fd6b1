"""U-Net encoder: the alternative to AQNet's dilated residual encoder (`model.encoder: unet`).

The U-Net family (the "U-Net/ConvLSTM-style" models of gridded air-quality forecasting) reaches a wide receptive
field by downsampling instead of dilation: residual blocks at the grid's resolution, at 1/2 and at 1/4, strided
3x3 convolutions down, nearest upsampling plus a 1x1 merge with the skip up. It takes and returns the same
tensors as the dilated encoder (stem output [B, hidden, Y, X] -> state [B, hidden, Y, X]) for any Y, X (odd
sizes included), so everything around it (spreading, decoder, calibration, ONNX export) is unchanged.
Zero-initialised where it adds to a path, it starts as the identity on its input, as the dilated stack does.
Unlike the dilated encoder its output depends on where a tile starts (the downsampling phase), so tiled
inference of a large grid is exact only with tile offsets that are multiples of 4 (`PHASE`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.blocks import ResBlock

PHASE = 4  # two stride-2 levels


class UNetEncoder(nn.Module):
    """hidden channels at full resolution, 2 x hidden at 1/2 and 1/4; `blocks` residual blocks per level (at
    1/4 at most two, dilations 1 and 2)."""

    def __init__(self, hidden: int, blocks: int = 2, dropout: float = 0.0):
        super().__init__()
        wide = 2 * hidden
        self.enc0 = nn.Sequential(*[ResBlock(hidden, 1, dropout) for _ in range(blocks)])
        self.down1 = nn.Conv2d(hidden, wide, 3, stride=2, padding=1)
        self.enc1 = nn.Sequential(*[ResBlock(wide, 1, dropout) for _ in range(blocks)])
        self.down2 = nn.Conv2d(wide, wide, 3, stride=2, padding=1)
        self.mid = nn.Sequential(*[ResBlock(wide, d, dropout) for d in (1, 2)[:blocks]])
        self.merge1 = nn.Conv2d(2 * wide, wide, 1)
        self.dec1 = nn.Sequential(*[ResBlock(wide, 1, dropout) for _ in range(blocks)])
        self.merge0 = nn.Conv2d(wide, hidden, 1)
        self.dec0 = nn.Sequential(*[ResBlock(hidden, 1, dropout) for _ in range(blocks)])
        nn.init.zeros_(self.merge0.weight)  # the coarse path starts switched off: the identity on the input
        nn.init.zeros_(self.merge0.bias)

    @staticmethod
    def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=like.shape[-2:], mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = self.enc0(x)
        s1 = self.enc1(self.down1(F.gelu(s0)))
        m = self.mid(self.down2(F.gelu(s1)))
        u1 = self.dec1(self.merge1(torch.cat([s1, self._up(m, s1)], dim=1)))
        return self.dec0(s0 + self.merge0(F.gelu(self._up(u1, s0))))

    @staticmethod
    def receptive_field_cells(blocks: int = 2) -> int:
        """Half-width in full-resolution cells beyond which an input cannot reach an output (a bound: the
        blocks at 1, 1/2 and 1/4 resolution, the strided convolutions and the upsampling's alignment)."""
        mid = sum(d + 1 for d in (1, 2)[:blocks])
        return 2 * blocks + 1 + 4 * blocks + 2 + 4 * mid + 4 + 4 * blocks + 2 + 2 * blocks + PHASE
