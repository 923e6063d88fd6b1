"""aqcast models: deep gridded forecaster, losses, baselines, GBT reference.

Public API: `build_model(cfg, channels, norm_stats)`, `ModelConfig`, `masked_pinball`.
Imports are lazy (no torch import at package import).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from models.config import ModelConfig


def build_model(cfg: ModelConfig | Mapping[str, Any] | None, channels: Mapping[str, Sequence[str]],
                norm_stats: Mapping[str, Mapping[str, Any]] | str) -> nn.Module:
    """Build the deep model: an `AQNet`, or an `AQEnsemble` of `cfg.members` of them.

    cfg: `ModelConfig` or its dict (None = defaults). channels: {"obs": [...], "forcing": [...],
    "static": [...]} — the WindowSampler's channel names in order (store variable names, e.g. `obs_pm25`,
    `met_t2m`, `hour_sin`, `static_elevation`). norm_stats: the store's `norm_stats` attr (dict or JSON str).
    """
    import json

    from models.config import ModelConfig
    from models.ensemble import AQEnsemble
    from models.net import AQNet

    if cfg is None:
        cfg = ModelConfig()
    elif not isinstance(cfg, ModelConfig):
        cfg = ModelConfig.model_validate(dict(cfg) if not hasattr(cfg, "model_dump") else cfg.model_dump())
    if isinstance(norm_stats, str):
        norm_stats = json.loads(norm_stats)
    return AQEnsemble(cfg, channels, norm_stats) if cfg.members > 1 else AQNet(cfg, channels, norm_stats)


def __getattr__(name: str) -> Any:
    if name == "ModelConfig":
        from models.config import ModelConfig

        return ModelConfig
    if name == "masked_pinball":
        from models.losses import masked_pinball

        return masked_pinball
    raise AttributeError(name)
