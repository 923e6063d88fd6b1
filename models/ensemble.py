"""AQEnsemble: `members` independently initialised AQNets behind one frame, averaged into one forecast.

Why: on Beijing the seed alone moves PM2.5 MAE at 24 h by 0.8-1.5 ug m-3 and the mean of two seeded runs beat
the better one at every lead (docs/experiments-beijing-2.md, fifth round): the members' errors differ where the
weights, not the weather, are the cause. The members share the input features (normalisation, station
spreading, forcing windows: no learned weights) and nothing else; each trains on its own loss
(`decode_members`), and the ensemble forecast averages their P50 and raw P10/P90 gaps in the targets'
normalised log1p space (= the mean of the members' quantiles there) before one calibration of the gaps
(`gap_scale`, `gap_hour`, `gap_season`) and of the P50 at observed cells (`p50_persist`), which therefore fit
the ensemble, not a member. One module, so one
checkpoint, one registered version and one ONNX graph. With `member_encoders` the members differ in their encoder
too (e.g. one dilated, one U-Net): the same averaging, over architectures as well as initialisations.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from models.config import ModelConfig
from models.frame import QuantileFrame
from models.net import AQNet


class AQEnsemble(QuantileFrame):
    """forward(obs, obs_mask, forcing, forcing_mask, static) -> [B, L, 2, 3, Y, X] in ug m-3 (member mean)."""

    def __init__(self, cfg: ModelConfig, channels: Mapping[str, Sequence[str]],
                 norm_stats: Mapping[str, Mapping[str, Any]]):
        super().__init__()
        if cfg.members < 2:
            raise ValueError("AQEnsemble needs members >= 2 (use AQNet for one)")
        self.cfg = cfg
        one = cfg.model_copy(update={"members": 1, "member_encoders": ()})
        self.members = nn.ModuleList(AQNet(one.model_copy(update={"encoder": e}), channels, norm_stats)
                                     for e in cfg.encoders())
        lead = self.members[0]
        self.register_buffer("gap_scale", torch.ones_like(lead.gap_scale))
        self.register_buffer("gap_hour", torch.zeros_like(lead.gap_hour))
        self.register_buffer("gap_season", torch.zeros_like(lead.gap_season))
        self.register_buffer("p50_persist", torch.zeros_like(lead.p50_persist))
        self.hidden = one.hidden

    @property
    def lead(self) -> AQNet:
        """Member 0: its (weight-free) input features and normalisers serve the ensemble."""
        return self.members[0]

    @property
    def target_norm(self) -> nn.Module:
        return self.lead.target_norm

    @property
    def aux_norm(self) -> nn.Module:
        """The auxiliary targets' normaliser (`model.aux_targets`; the members share the statistics)."""
        return self.lead.aux_norm

    def normalisation(self) -> dict[str, dict[str, Any]]:
        """The members share their normalisation: the lead member's."""
        return self.lead.normalisation()

    def station_weight(self, obs_mask: torch.Tensor, scale: int = 0) -> torch.Tensor:
        return self.lead.station_weight(obs_mask, scale)

    def future_features(self, forcing: torch.Tensor, forcing_mask: torch.Tensor) -> torch.Tensor:
        return self.lead.future_features(forcing, forcing_mask)

    def hour_basis(self, fut: torch.Tensor) -> torch.Tensor | None:
        return self.lead.hour_basis(fut)

    def season_basis(self, fut: torch.Tensor) -> torch.Tensor | None:
        return self.lead.season_basis(fut)

    def state(self, obs: torch.Tensor, obs_mask: torch.Tensor, forcing: torch.Tensor,
              forcing_mask: torch.Tensor, static: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (the members' states stacked along channels [B, M * hidden, Y, X], the shared skip base)."""
        x, base = self.lead.stem_input(obs, obs_mask, forcing, forcing_mask, static)
        return torch.cat([m.encode(x) for m in self.members], dim=1), base

    def _split(self, z: torch.Tensor) -> Sequence[torch.Tensor]:
        return torch.split(z, self.hidden, dim=1)

    def decode_parts(self, z: torch.Tensor, fut: torch.Tensor,
                     base: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Member mean of (p50, raw lower gap, raw upper gap) in normalised log space, then calibrated."""
        parts = [m.raw_parts(zm, fut, base) for m, zm in zip(self.members, self._split(z), strict=True)]
        mean = [torch.stack(p).mean(0) for p in zip(*parts, strict=True)]
        return self.calibrated(*mean, fut, base)

    def decode_members(self, z: torch.Tensor, fut: torch.Tensor, base: torch.Tensor,
                       aux: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Each member's own (uncalibrated) forecast [M, B, L, 2, 3, Y, X] in ug m-3: each trains on its own;
        with `aux` also each member's auxiliary P50 [M, B, L, n_aux, Y, X] (`AQNet.decode_members`)."""
        outs = [m.decode_members(zm, fut, base, aux) for m, zm in zip(self.members, self._split(z), strict=True)]
        if aux:
            return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])
        return torch.cat(outs)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Weights saved before `gap_season` / `p50_persist` existed load with no seasonal factor / no blend."""
        state_dict.setdefault(prefix + "gap_season", torch.zeros_like(self.gap_season))
        state_dict.setdefault(prefix + "p50_persist", torch.zeros_like(self.p50_persist))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
