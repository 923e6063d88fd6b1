"""What every gridded quantile forecaster shares after its decoder: the calibration of the P10/P90 gaps
(buffers `gap_scale`, `gap_hour` and `gap_season`, fitted by `training.calibrate`), the P50's blend toward the
init-hour observation where a cell has one (`p50_persist`, fitted by `training.blend_fit`), quantiles in ug m-3 and
the forward.

A subclass provides `state`, `future_features`, `decode_parts`, `hour_basis`, `season_basis`, `target_norm`,
`normalisation` (for the model card) and `cfg`; `models.net.AQNet` (one network) and `models.ensemble.AQEnsemble` (members
averaged) are the two.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class QuantileFrame(nn.Module):
    """forward(obs, obs_mask, forcing, forcing_mask, static) -> [B, L, 2, 3, Y, X] in ug m-3."""

    def calibrated(self, p50: torch.Tensor, g_lo: torch.Tensor, g_hi: torch.Tensor, fut: torch.Tensor,
                   base: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Scale the raw gaps [B, L, 2, Y, X] by `gap_scale` blended between its two cell classes by the
        station weight w in `base`: s_unobserved + w (s_observed - s_unobserved), times the diurnal factor
        exp(basis . gap_hour) of the valid local hour where the model has the hour forcings, and the seasonal
        factor exp(season . gap_season) of the valid day of year where it has the day-of-year forcings. The
        P50 first moves toward the init-hour observation where the cell has one (`persistence_blend`)."""
        n_leads, n_sp = self.cfg.leads, len(self.cfg.species)
        ny, nx = p50.shape[-2], p50.shape[-1]
        p50 = self.persistence_blend(p50, base)
        own = base[:, n_sp:2 * n_sp].reshape(-1, 1, n_sp, 1, ny, nx)  # station weight
        g = self.gap_scale.reshape(1, n_leads, n_sp, 2, 2, 1, 1)
        scale = g[:, :, :, :, 1] + own * (g[:, :, :, :, 0] - g[:, :, :, :, 1])  # [B, L, n_sp, 2, Y, X]
        basis = self.hour_basis(fut)
        if basis is not None:  # diurnal factor [B, L, n_sp, 2, Y, X]
            scale = scale * torch.exp(torch.einsum("blfyx,ksf->blksyx", basis, self.gap_hour))
        season = self.season_basis(fut)
        if season is not None:  # seasonal factor, the same way
            scale = scale * torch.exp(torch.einsum("blfyx,ksf->blksyx", season, self.gap_season))
        return p50, g_lo * scale[:, :, :, 0], g_hi * scale[:, :, :, 1]

    def observed_at_init(self, base: torch.Tensor) -> torch.Tensor:
        """The skip base's last channels [B, n_sp, ...]: 1 where the cell observed the species at the init hour."""
        return base[:, -len(self.cfg.species):]

    def persistence_blend(self, p50: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """p50 [B, L, 2, Y, X] (normalised log space) moved toward the init-hour observation by `p50_persist`
        [L, 2] at the cells that observed the species then (the last channels of `base`); elsewhere as it is."""
        n_sp = len(self.cfg.species)
        observed = self.observed_at_init(base).unsqueeze(1)  # [B, 1, n_sp, Y, X]
        a = self.p50_persist.reshape(1, self.cfg.leads, n_sp, 1, 1)
        return p50 + observed * a * (base[:, :n_sp].unsqueeze(1) - p50)

    def decode(self, z: torch.Tensor, fut: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """`decode_parts` -> quantiles [B, L, 2, 3, Y, X] in ug m-3 (monotone, non-negative)."""
        return self.quantiles(*self.decode_parts(z, fut, base))

    def quantiles(self, p50: torch.Tensor, g_lo: torch.Tensor, g_hi: torch.Tensor) -> torch.Tensor:
        """(p50, calibrated gaps) [B, L, 2, Y, X] -> quantiles [B, L, 2, 3, Y, X] in ug m-3."""
        anchor = p50.detach() if self.training and self.cfg.median_stop_grad else p50  # `model.median_stop_grad`
        q = torch.stack([anchor - g_lo, p50, anchor + g_hi], dim=3)  # normalised log space
        return F.relu(self.target_norm.denormalize(q, dim=2))

    def forward(self, obs: torch.Tensor, obs_mask: torch.Tensor, forcing: torch.Tensor,
                forcing_mask: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        z, base = self.state(obs, obs_mask, forcing, forcing_mask, static)
        return self.decode(z, self.future_features(forcing, forcing_mask), base)

    def forward_members(self, obs: torch.Tensor, obs_mask: torch.Tensor, forcing: torch.Tensor,
                        forcing_mask: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        """Each ensemble member's own forecast [M, B, L, 2, 3, Y, X] (M = 1 for one net): what the loss sees."""
        z, base = self.state(obs, obs_mask, forcing, forcing_mask, static)
        return self.decode_members(z, self.future_features(forcing, forcing_mask), base)

    def forward_normalized(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Forecast in the normalised log1p space of the targets (for losses that want it)."""
        return self.target_norm(self.forward(*inputs), dim=2)
