"""AQNet: gridded PM2.5/O3 quantile forecaster from sparse station history + known-future forcings.

Pipeline (all fully convolutional, limited receptive field, so large grids can be tiled):
1. normalise inputs with buffered statistics (pollutants in log1p space), zero where masked;
2. spread every observed channel and hour with a multi-scale normalized convolution (value + confidence);
3. fold history into channels (obs features every hour, forcing every `history_forcing_stride` hours),
   add static fields, 1x1 stem, dilated residual encoder (or a U-Net, `encoder: unet`) -> state z [B, hidden, Y, X];
4. shared per-lead decoder: z + projected forcing at valid time (+ its running mean since init and its
   trailing means over `forcing_windows` hours) + lead embedding (with `decoder_film` those forcing features
   also scale the projected state, 1 + FiLM) -> MLP (`decoder_layers`) -> optional causal
   convolutions along the lead axis (`lead_dilations`) -> 6 channels (2 species x {p50, lower gap, upper
   gap}; with `species_decoders` each species has its own decoder, as grouped convolutions); the gaps are
   scaled by the calibration buffer `gap_scale`; with `diurnal_inputs` each lead also sees the cell's targets
   at the same local hour on the last day of the history (`same_hour`);
5. p50 (normalised log space) = head_gain[lead, species] * head + alpha[lead, species] * spread last
   observation (persistence skip; the cell's own observation where it has one with `persistence_exact`;
   with `skip_gate` times 2 sigmoid of a decoder output, so the weather since init sets how much persists;
   with `skip_observed` alpha and head_gain have their own increments at cells that observed the init hour)
   [+ beta[lead, species] * the same hour's value with `diurnal_inputs`: diurnal persistence];
   p10 = p50 - softplus, p90 = p50 + softplus (monotone), expm1 back to ug m-3, then relu (non-negative).
   The calibration scales of the gaps come in two classes, blended per cell by its `station_weight`: cells
   that observed the species at the init hour (weight 1) and cells far from any observation (weight 0, most of
   a hot-spot grid): their errors differ most at short leads.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.blocks import ResBlock
from models.config import ModelConfig
from models.frame import QuantileFrame
from models.normalize import Normalizer, base_name
from models.spread import NormalizedConv
from models.unet import UNetEncoder


class LeadConv(nn.Module):
    """Causal residual convolution along the lead axis, per cell: h + conv(gelu(h)) where the output at lead
    l sees leads l and l - dilation (the trajectory of the hours since init, not only the valid hour's
    forcing). Zero-initialised, so it starts as the identity."""

    def __init__(self, ch: int, dilation: int, groups: int = 1):
        super().__init__()
        self.dilation = dilation
        self.conv = nn.Conv1d(ch, ch, 2, dilation=dilation, groups=groups)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h [N, C, L] -> [N, C, L]."""
        return h + self.conv(F.pad(F.gelu(h), (self.dilation, 0)))


class AQNet(QuantileFrame):
    """forward(obs, obs_mask, forcing, forcing_mask, static) -> [B, L, 2, 3, Y, X] in ug m-3."""

    def __init__(self, cfg: ModelConfig, channels: Mapping[str, Sequence[str]],
                 norm_stats: Mapping[str, Mapping[str, Any]]):
        super().__init__()
        self.cfg = cfg
        self.obs_names = list(channels.get("obs", []))
        self.forcing_names = list(channels.get("forcing", []))
        self.static_names = list(channels.get("static", []))
        if not self.obs_names or not self.forcing_names:
            raise ValueError("AQNet needs at least one obs and one forcing channel")
        h, n_leads = cfg.history, cfg.leads
        co, cf, cs = len(self.obs_names), len(self.forcing_names), len(self.static_names)
        self.obs_norm = Normalizer(self.obs_names, norm_stats)
        unknown = sorted(set(cfg.log_forcings) - set(self.forcing_names))
        if unknown:
            raise ValueError(f"model.log_forcings names channels that are not forcings of this model: {unknown}")
        self.forcing_norm = Normalizer(self.forcing_names, norm_stats, cfg.log_forcings)
        self.static_norm = Normalizer(self.static_names, norm_stats)
        self.target_norm = Normalizer([f"obs_{s}" for s in cfg.species], norm_stats)
        bases = [base_name(n) for n in self.obs_names]
        self.species_idx = [bases.index(s) if s in bases else -1 for s in cfg.species]
        self.spread = NormalizedConv(cfg.spread_sigmas, cfg.spread_truncate)
        n_s = self.spread.n_scales
        self.hist_start = (h - 1) % cfg.history_forcing_stride
        n_hist_f = len(range(self.hist_start, h, cfg.history_forcing_stride))
        self.spread_hours = cfg.spread_hours()
        self.register_buffer("spread_idx", torch.tensor(self.spread_hours, dtype=torch.long))
        stem_in = h * co * 2 + len(self.spread_hours) * co * 2 * n_s + n_hist_f * cf * 2 + cs
        self.stem = nn.Conv2d(stem_in, cfg.hidden, 1)
        self.blocks = (UNetEncoder(cfg.hidden, cfg.unet_blocks, cfg.dropout) if cfg.encoder == "unet"
                       else nn.Sequential(*[ResBlock(cfg.hidden, d, cfg.dropout) for d in cfg.dilations]))
        g = len(cfg.species) if cfg.species_decoders else 1  # decoder groups: with g > 1 one per species
        d = cfg.decoder_hidden * g
        self.z_proj = nn.Conv2d(cfg.hidden, d, 1)
        self.f_proj = nn.Conv2d((3 + len(cfg.forcing_windows) + cfg.forcing_changes) * cf, d, 1, bias=False)
        self.lead_emb = nn.Parameter(torch.zeros(n_leads, d))
        k = cfg.decoder_kernel
        self.dec = nn.Conv2d(d, d, k, padding=k // 2, groups=g)
        self.dec_extra = nn.ModuleList(nn.Conv2d(d, d, 1, groups=g) for _ in range(cfg.decoder_layers - 1))
        self.lead_convs = nn.ModuleList(LeadConv(d, dl, g) for dl in cfg.lead_dilations)
        self.head = nn.Conv2d(d, len(cfg.species) * 3, 1, groups=g)  # species-major outputs: group s -> species s
        nn.init.normal_(self.lead_emb, std=0.02)
        with torch.no_grad():  # initial P10-P90 gap ~ +-0.5 std in log space
            self.head.bias.view(len(cfg.species), 3)[:, 1:] = math.log(math.expm1(0.5))
        lead = torch.arange(1, n_leads + 1, dtype=torch.float32)
        alpha0 = torch.exp(-lead / 48.0)[:, None].repeat(1, len(cfg.species))
        self.alpha = nn.Parameter(alpha0 if cfg.persistence_skip else torch.zeros_like(alpha0),
                                  requires_grad=cfg.persistence_skip)
        # per-lead gain on the decoder's P50 term: lets short leads switch the shared decoder off and follow
        # the skip (a shared decoder + additive lead embedding could not: +1 h was worse than persistence)
        self.head_gain = nn.Parameter(torch.ones(n_leads, len(cfg.species)))
        self.register_buffer("lead_count", lead.reshape(1, n_leads, 1, 1, 1))
        # post-hoc calibration of the P10/P90 gaps ([L, 2 species, {lower, upper}, {cell observed the species
        # at init, cell far from any observation}], blended by `station_weight`); fitted after training by
        # `training.calibrate`, 1 = as trained. A buffer, so the exported artifact carries it.
        self.register_buffer("gap_scale", torch.ones(n_leads, len(cfg.species), 2, 2))
        # diurnal factor on the gaps: exp(sum_f gap_hour[species, side, f] * basis_f(valid local hour)), basis
        # sin/cos of 1 and 2 cycles a day from the hour_sin/hour_cos forcing (0 = no factor; fitted after the
        # lead scales by `training.calibrate`). Without those forcings the factor is 1.
        self.register_buffer("gap_hour", torch.zeros(len(cfg.species), 2, 4))
        self.hour_idx = ([self.forcing_names.index(n) for n in ("hour_sin", "hour_cos")]
                         if {"hour_sin", "hour_cos"} <= set(self.forcing_names) else None)
        # seasonal factor on the gaps: exp(sum_f gap_season[species, side, f] * (sin, cos of the valid day of
        # year)_f), from the doy_sin/doy_cos forcing (0 = none; `optim.calibrate_season`); 1 without them
        self.register_buffer("gap_season", torch.zeros(len(cfg.species), 2, 2))
        # at cells that observed a species at the init hour the P50 moves toward that observation by this weight
        # per lead (0 = off; fitted on training-period inits after training, `training.blend_fit`)
        self.register_buffer("p50_persist", torch.zeros(n_leads, len(cfg.species)))
        self.doy_idx = ([self.forcing_names.index(n) for n in ("doy_sin", "doy_cos")]
                        if {"doy_sin", "doy_cos"} <= set(self.forcing_names) else None)
        if cfg.diurnal_inputs:  # built last, so a model without them initialises exactly as before
            n_sp = len(cfg.species)
            self.spread_fine = NormalizedConv(cfg.spread_sigmas[:1], cfg.spread_truncate)
            same_hour = [h - 1 + lead - 24 * math.ceil(lead / 24) for lead in range(1, n_leads + 1)]
            self.register_buffer("diurnal_idx", torch.tensor(same_hour, dtype=torch.long))
            self.d_proj = nn.Conv2d(2 * n_sp, d, 1, bias=False)
            self.beta = nn.Parameter(torch.zeros(n_leads, n_sp))
        if cfg.skip_gate:  # built last too: how much of the init-hour state persists depends on the weather since
            self.skip_gate = nn.Conv2d(d, len(cfg.species), 1, groups=g)  # zero-initialised: the factor starts at 1
            nn.init.zeros_(self.skip_gate.weight)
            nn.init.zeros_(self.skip_gate.bias)
        if cfg.decoder_film:  # built last, zero-initialised: the state's projection starts unscaled
            self.film = nn.Conv2d(self.f_proj.in_channels, d, 1)
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)
        if cfg.skip_hour:  # built last, zero-initialised: the skip starts as the per-lead constant
            if self.hour_idx is None:
                raise ValueError("model.skip_hour needs the hour_sin and hour_cos forcings")
            self.skip_hour_coef = nn.Parameter(torch.zeros(n_leads, len(cfg.species), 4))
        if cfg.aux_targets:  # training-only heads for other pollutants (multi-task); never in the forecast
            self.aux_norm = Normalizer([f"obs_{p}" for p in cfg.aux_targets], norm_stats)
            self.aux_head = nn.Conv2d(d, len(cfg.aux_targets), 1)
        if cfg.skip_observed:  # built last, zero-initialised: observed cells start with the shared skip and gain
            self.alpha_own = nn.Parameter(torch.zeros(n_leads, len(cfg.species)))
            self.gain_own = nn.Parameter(torch.zeros(n_leads, len(cfg.species)))

    def normalisation(self) -> dict[str, dict[str, Any]]:
        """{channel: {mean, std, log1p}} as this net's normalisers apply them (for the model card)."""
        out: dict[str, dict[str, Any]] = {}
        for norm in (self.obs_norm, self.forcing_norm, self.static_norm, self.target_norm):
            out |= norm.as_dict()
        return out

    def _obs_features(self, obs: torch.Tensor, obs_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> folded features [B, C_in, Y, X] and the skip's base [B, 2 * n_sp, Y, X]: the targets' spread
        last observation, then `station_weight` of each species (with `diurnal_inputs`, then the targets'
        history at the cell: `_target_history`, 2 * H * n_sp more channels), last n_sp channels: 1 where the
        cell observed the species at the init hour (`skip_observed`, `p50_persist`)."""
        _, h, co, ny, nx = obs.shape
        m = (obs_mask > 0.5).to(obs.dtype)
        z = torch.where(m > 0, self.obs_norm(obs, dim=2), torch.zeros_like(obs))
        raw = torch.cat([z, m], dim=2).reshape(-1, h * co * 2, ny, nx)
        n_h = len(self.spread_hours)
        zs, ms = z.index_select(1, self.spread_idx), m.index_select(1, self.spread_idx)
        val, conf = self.spread(zs.reshape(-1, ny, nx), ms.reshape(-1, ny, nx))  # [B*n_h*Co, S, Y, X]
        sp = torch.cat([val, conf], dim=1).reshape(-1, n_h * co * 2 * val.shape[1], ny, nx)
        folded = torch.cat([raw, sp], dim=1)
        at_init = (-1, n_h, co, val.shape[1], ny, nx)
        last = val.reshape(at_init)[:, n_h - 1, :, 0]  # finest scale, [B, Co, Y, X]
        if self.cfg.persistence_exact:  # a cell's own init-hour observation where it has one
            last = torch.where(m[:, h - 1] > 0, z[:, h - 1], last)
        weight = self._weight(self._species(conf.reshape(at_init)[:, n_h - 1, :, 0]))
        parts = [self._species(last), weight]
        if self.cfg.diurnal_inputs:
            parts += self._target_history(z, m)
        parts.append(self._species(m[:, h - 1]))  # last: 1 where the cell observed the species at init
        return folded, torch.cat(parts, dim=1)

    def _target_history(self, z: torch.Tensor, m: torch.Tensor) -> list[torch.Tensor]:
        """Normalised z and mask m [B, H, Co, Y, X] -> the target species at every history hour at every cell
        (the cell's own value where observed, else the finest-scale spread) and its weight (1 where observed,
        else `_weight` of the spreading confidence), each [B, H * n_sp, Y, X]."""
        b, _, _, ny, nx = z.shape
        zt, mt = self._species(z, dim=2), self._species(m, dim=2)
        val, conf = self.spread_fine(zt.reshape(-1, ny, nx), mt.reshape(-1, ny, nx))
        own = mt.reshape(-1, ny, nx) > 0
        val = torch.where(own, zt.reshape(-1, ny, nx), val[:, 0])
        wt = torch.where(own, torch.ones_like(val), self._weight(conf[:, 0]))
        return [val.reshape(b, -1, ny, nx), wt.reshape(b, -1, ny, nx)]

    def same_hour(self, base: torch.Tensor) -> torch.Tensor:
        """The skip base with `diurnal_inputs` [B, 2 n_sp (1 + H), Y, X] -> at each lead the targets' value and
        weight at the same local hour on the last day of the history [B, L, 2 * n_sp, Y, X]."""
        n_sp, h = len(self.cfg.species), self.cfg.history
        hist = base[:, 2 * n_sp:2 * n_sp * (1 + h)].reshape(base.shape[0], 2, h, n_sp, *base.shape[-2:])
        sel = hist.index_select(2, self.diurnal_idx).transpose(1, 2)  # [B, L, 2, n_sp, Y, X]
        return sel.reshape(sel.shape[0], sel.shape[1], 2 * n_sp, sel.shape[-2], sel.shape[-1])

    def _species(self, a: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """Obs channels along `dim` (e.g. [B, Co, Y, X]) -> the target species there ([B, n_sp, Y, X]; zeros
        for one not among them)."""
        pick = [a.select(dim, i) if i >= 0 else torch.zeros_like(a.select(dim, 0)) for i in self.species_idx]
        return torch.stack(pick, dim=dim)

    @staticmethod
    def _weight(conf: torch.Tensor) -> torch.Tensor:
        """Finest-scale spreading confidence den / (1 + den) -> min(den, 1)."""
        return (conf / (1 - conf).clamp(min=1e-6)).clamp(max=1.0)

    def station_weight(self, obs_mask: torch.Tensor, scale: int = 0) -> torch.Tensor:
        """[B, n_sp, Y, X] in [0, 1]: the kernel-weighted number of init-hour observations of each target
        species at the finest spreading scale (or `spread_sigmas[scale]`), capped at 1 (1 at a cell that
        observed it, ~0.5 one station 1.7 cells away, 0 far from any). It blends the two calibration classes
        of the P10/P90 gaps; the forward takes it from its own spreading (the same numbers, tested)."""
        ms = self._species((obs_mask[:, -1] > 0.5).to(obs_mask.dtype))
        b, n_sp, ny, nx = ms.shape
        _, conf = self.spread(torch.zeros_like(ms).reshape(-1, ny, nx), ms.reshape(-1, ny, nx))
        return self._weight(conf[:, scale].reshape(b, n_sp, ny, nx))

    def stem_input(self, obs: torch.Tensor, obs_mask: torch.Tensor, forcing: torch.Tensor,
                   forcing_mask: torch.Tensor, static: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (the encoder's input [B, C_in, Y, X]: folded obs + spread obs + history forcing + static, the
        skip's base [B, 2 * n_sp, Y, X]). No learned weights: ensemble members share it."""
        h, ny, nx = self.cfg.history, obs.shape[-2], obs.shape[-1]
        obs_f, base = self._obs_features(obs, obs_mask)
        sl = slice(self.hist_start, h, self.cfg.history_forcing_stride)
        fm = (forcing_mask[:, sl] > 0.5).to(forcing.dtype)
        fz = torch.where(fm > 0, self.forcing_norm(forcing[:, sl], dim=2), torch.zeros_like(fm))
        hist = torch.cat([fz, fm], dim=2)
        parts = [obs_f, hist.reshape(-1, hist.shape[1] * hist.shape[2], ny, nx)]
        if self.static_names:
            parts.append(self.static_norm(static, dim=1))
        return torch.cat(parts, dim=1), base

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Stem + dilated residual encoder: `stem_input` [B, C_in, Y, X] -> state z [B, hidden, Y, X]."""
        return self.blocks(self.stem(x))

    def state(self, obs: torch.Tensor, obs_mask: torch.Tensor, forcing: torch.Tensor,
              forcing_mask: torch.Tensor, static: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder: -> (state z [B, hidden, Y, X], the skip's base [B, 2 * n_sp, Y, X]: the targets' spread
        last observation (with `persistence_exact` the cell's own value where it has one), then
        `station_weight`, which blends the calibration classes; with `diurnal_inputs` the targets' history
        at each cell follows)."""
        x, base = self.stem_input(obs, obs_mask, forcing, forcing_mask, static)
        return self.encode(x), base

    def future_features(self, forcing: torch.Tensor, forcing_mask: torch.Tensor) -> torch.Tensor:
        """Per-lead forcing features [B, L, (3 + n_windows [+ 1]) * Cf, Y, X] from forcing [B, H + L, Cf, Y, X].

        At each valid hour: the normalised forcing, its mask, its running mean since init, for each
        `forcing_windows` w its trailing w-hour mean ending at the valid hour (reaching back into the history,
        e.g. the ventilation of the last day) and, with `forcing_changes`, its change since the init hour (0
        where either is missing). Missing forcing counts as 0 (the normalised mean).
        """
        h = self.cfg.history
        fm = (forcing_mask > 0.5).to(forcing.dtype)
        fz = torch.where(fm > 0, self.forcing_norm(forcing, dim=2), torch.zeros_like(forcing))
        fut = fz[:, h:]
        parts = [fut, fm[:, h:], torch.cumsum(fut, dim=1) / self.lead_count]
        if self.cfg.forcing_windows:
            cs = torch.cumsum(fz, dim=1)  # cs[t] = sum of fz[0..t]
            n_l = self.cfg.leads
            for w in self.cfg.forcing_windows:  # mean over valid-w+1 .. valid; w <= history (validated)
                parts.append((cs[:, h:] - cs[:, h - w:h - w + n_l]) / float(w))
        if self.cfg.forcing_changes:
            parts.append((fut - fz[:, h - 1:h]) * fm[:, h:] * fm[:, h - 1:h])
        return torch.cat(parts, dim=2)

    def hour_basis(self, fut: torch.Tensor) -> torch.Tensor | None:
        """[B, L, 4, Y, X]: sin a, cos a, sin 2a, cos 2a of the valid local hour (a = 2 pi hour / 24), from the
        normalised hour_sin/hour_cos at each valid hour (the first channels of `future_features`), clamped to
        [-1, 1] so that a garbage hour input cannot blow the band up; None without those forcings."""
        if self.hour_idx is None:
            return None
        nrm = self.forcing_norm
        sn, cs = ((fut[:, :, i] * nrm.std[i] + nrm.mean[i]).clamp(-1.0, 1.0) for i in self.hour_idx)
        return torch.stack([sn, cs, 2 * sn * cs, cs * cs - sn * sn], dim=2)

    def season_basis(self, fut: torch.Tensor) -> torch.Tensor | None:
        """[B, L, 2, Y, X]: sin and cos of the valid day of year (the doy_sin/doy_cos forcing, clamped to
        [-1, 1]); None without those forcings."""
        if self.doy_idx is None:
            return None
        nrm = self.forcing_norm
        return torch.stack([(fut[:, :, i] * nrm.std[i] + nrm.mean[i]).clamp(-1.0, 1.0) for i in self.doy_idx], 2)

    def decoder_hidden(self, z: torch.Tensor, fut: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """Shared per-lead decoder up to its heads: state z [B, hidden, Y, X], features fut [B, L, F, Y, X],
        base [B, 2 * n_sp, Y, X] (from `state`) -> hidden [B * L, D, Y, X] (D = decoder_hidden, times the number
        of species with `species_decoders`: their groups one after the other). Per cell when
        decoder_kernel == 1 (any cell layout)."""
        n_leads, n_sp = self.cfg.leads, len(self.cfg.species)
        ny, nx = z.shape[-2], z.shape[-1]
        d = self.z_proj.out_channels
        flat = fut.reshape(-1, fut.shape[2], ny, nx)
        fp = self.f_proj(flat).reshape(-1, n_leads, d, ny, nx)
        zp = self.z_proj(z).unsqueeze(1)
        if self.cfg.decoder_film:  # the weather since init decides which parts of the init-hour state carry on
            zp = zp * (1.0 + self.film(flat).reshape(-1, n_leads, d, ny, nx))
        pre = zp + fp + self.lead_emb.reshape(1, n_leads, -1, 1, 1)
        if self.cfg.diurnal_inputs:
            same = self.same_hour(base)
            pre = pre + self.d_proj(same.reshape(-1, 2 * n_sp, ny, nx)).reshape(-1, n_leads, d, ny, nx)
        hid = F.gelu(pre)
        hid = F.gelu(self.dec(hid.reshape(-1, d, ny, nx)))
        for layer in self.dec_extra:
            hid = hid + F.gelu(layer(hid))
        if len(self.lead_convs):  # [B*L, d, Y, X] -> per cell [B*Y*X, d, L] and back
            seq = hid.reshape(-1, n_leads, d, ny, nx).permute(0, 3, 4, 2, 1).reshape(-1, d, n_leads)
            for layer in self.lead_convs:
                seq = layer(seq)
            hid = seq.reshape(-1, ny, nx, d, n_leads).permute(0, 4, 3, 1, 2).reshape(-1, d, ny, nx)
        return hid

    def raw_parts(self, z: torch.Tensor, fut: torch.Tensor, base: torch.Tensor,
                  hid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The decoder's heads on `decoder_hidden` (computed unless given) -> (p50, lower gap, upper gap),
        each [B, L, 2, Y, X] in the targets' normalised log space, before the calibration of the gaps."""
        n_leads, n_sp = self.cfg.leads, len(self.cfg.species)
        ny, nx = z.shape[-2], z.shape[-1]
        hid = self.decoder_hidden(z, fut, base) if hid is None else hid
        if self.cfg.diurnal_inputs:
            same = self.same_hour(base)
        out = self.head(hid).reshape(-1, n_leads, n_sp, 3, ny, nx)
        alpha, gain = self.alpha.reshape(1, n_leads, n_sp, 1, 1), self.head_gain.reshape(1, n_leads, n_sp, 1, 1)
        if self.cfg.skip_hour:  # [B, L, 4, Y, X] . [L, sp, 4] -> a weight per lead, species and valid hour
            alpha = alpha + torch.einsum("blkyx,lsk->blsyx", self.hour_basis(fut), self.skip_hour_coef)
        if self.cfg.skip_observed:  # cells with their own init-hour observation: their own weight and gain
            own = self.observed_at_init(base).unsqueeze(1)  # [B, 1, n_sp, Y, X]
            alpha = alpha + own * self.alpha_own.reshape(1, n_leads, n_sp, 1, 1)
            gain = gain + own * self.gain_own.reshape(1, n_leads, n_sp, 1, 1)
        skip = alpha * base[:, :n_sp].unsqueeze(1)
        if self.cfg.skip_gate:  # the decoder's own factor on the skip, in (0, 2)
            skip = skip * 2 * torch.sigmoid(self.skip_gate(hid).reshape(-1, n_leads, n_sp, ny, nx))
        p50 = gain * out[:, :, :, 1] + skip
        if self.cfg.diurnal_inputs:
            p50 = p50 + self.beta.reshape(1, n_leads, n_sp, 1, 1) * same[:, :, :n_sp]
        return p50, F.softplus(out[:, :, :, 0]), F.softplus(out[:, :, :, 2])

    def decode_parts(self, z: torch.Tensor, fut: torch.Tensor,
                     base: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`raw_parts` with the gaps calibrated (`QuantileFrame.calibrated`)."""
        return self.calibrated(*self.raw_parts(z, fut, base), fut, base)

    def aux_out(self, hid: torch.Tensor, ny: int, nx: int) -> torch.Tensor:
        """The auxiliary targets' P50 [B, L, n_aux, Y, X] (normalised log space) from `decoder_hidden`."""
        return self.aux_head(hid).reshape(-1, self.cfg.leads, len(self.cfg.aux_targets), ny, nx)

    def decode_members(self, z: torch.Tensor, fut: torch.Tensor, base: torch.Tensor,
                       aux: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Each member's own forecast [M, B, L, 2, 3, Y, X] (here M = 1): what training's loss sees; with
        `aux` also the auxiliary targets' P50 [M, B, L, n_aux, Y, X] (`model.aux_targets`, training only)."""
        if not aux:
            return self.decode(z, fut, base).unsqueeze(0)
        hid = self.decoder_hidden(z, fut, base)
        q = self.quantiles(*self.calibrated(*self.raw_parts(z, fut, base, hid), fut, base))
        return q.unsqueeze(0), self.aux_out(hid, z.shape[-2], z.shape[-1]).unsqueeze(0)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Weights saved before `gap_scale` / `head_gain` existed load as uncalibrated / ungated (1); a
        one-class `gap_scale` [L, 2, 2] serves both cell classes."""
        state_dict.setdefault(prefix + "gap_scale", torch.ones_like(self.gap_scale))
        g = state_dict[prefix + "gap_scale"]
        if g.dim() == 3:
            state_dict[prefix + "gap_scale"] = g.unsqueeze(-1).expand(*g.shape, 2).contiguous()
        state_dict.setdefault(prefix + "head_gain", torch.ones_like(self.head_gain))
        state_dict.setdefault(prefix + "gap_hour", torch.zeros_like(self.gap_hour))
        state_dict.setdefault(prefix + "gap_season", torch.zeros_like(self.gap_season))
        state_dict.setdefault(prefix + "p50_persist", torch.zeros_like(self.p50_persist))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
