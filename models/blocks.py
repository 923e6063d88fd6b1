"""Building blocks shared by the encoders (`models.net`, `models.unet`)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResBlock(nn.Module):
    """x + conv(gelu(conv(gelu(x)))) with dilation; second conv zero-initialised (starts as identity)."""

    def __init__(self, ch: int, dilation: int, dropout: float):
        super().__init__()
        self.c1 = nn.Conv2d(ch, ch, 3, padding=dilation, dilation=dilation)
        self.c2 = nn.Conv2d(ch, ch, 3, padding=1)
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        nn.init.zeros_(self.c2.weight)
        nn.init.zeros_(self.c2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.c2(self.drop(F.gelu(self.c1(F.gelu(x)))))
