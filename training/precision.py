"""Arithmetic of the training steps: float32, or bfloat16 autocast of the learned layers (`optim.precision`).

Only the training step's forward runs under autocast; the weights and the optimizer stay float32, and so do
validation, calibration and the export (the artifact is float32 whatever the training precision). The
weight-free input features (the station spreading) opt out of autocast inside the model.
"""
from __future__ import annotations

import contextlib
import logging

import torch


def native_bf16(device: str = "cpu") -> bool:
    """Whether `device` multiplies bfloat16 natively: a CPU with AVX512-BF16 or AMX, a CUDA GPU that supports it.
    Elsewhere bfloat16 is emulated and slower than float32."""
    if device == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    probes = (getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(bool(p()) for p in probes if p is not None)


def resolve(precision: str, device: str = "cpu") -> str:
    """`optim.precision` -> "32" or "bf16-mixed" ("auto": bf16-mixed where `native_bf16(device)`)."""
    if precision == "auto":
        return "bf16-mixed" if native_bf16(device) else "32"
    if precision not in ("32", "bf16-mixed"):
        raise ValueError(f"optim.precision must be 32, bf16-mixed or auto, got {precision!r}")
    if precision == "bf16-mixed" and not native_bf16(device):
        logging.getLogger(__name__).warning("optim.precision bf16-mixed on a %s without native bfloat16: emulated, "
                                            "likely slower than float32 (auto picks float32 here)", device)
    return precision


def step_context(precision: str, device: str) -> contextlib.AbstractContextManager[None]:
    """The context a training step's forward runs in: bfloat16 autocast for "bf16-mixed", else nothing."""
    if precision == "bf16-mixed":
        return torch.autocast(device, dtype=torch.bfloat16)
    return contextlib.nullcontext()
