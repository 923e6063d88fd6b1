"""LightningModule: the deep model (`models.build_model`), masked pinball loss, AdamW, warm-up + cosine/plateau.

Validation accumulates per-lead, per-species MAE of the P50 and P10-P90 coverage at the station cells, split
into input stations and held-out stations (never inputs, never in the loss); the loss used for early stopping
is the pinball loss on input stations only. Persistence (last observation at init) is scored on the same
entries for a skill reference.
"""
from __future__ import annotations

import logging
from typing import Any

import lightning as L
import numpy as np
import torch

from training.config import TrainConfig
from training.precision import resolve as resolve_precision
from training.precision import step_context
from training.schedule import CosineBudget

INPUTS = ("obs", "obs_mask", "forcing", "forcing_mask", "static")
SPECIES = ("pm25", "o3")
REPORT_LEADS = (24, 48, 72)


def at_stations(a: torch.Tensor, row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    """a [B, ..., Y, X] at the cells (row, col) [B, S] -> [B, ..., S]."""
    ny, nx = a.shape[-2], a.shape[-1]
    flat = a.reshape(*a.shape[:-2], ny * nx)
    idx = (row.long() * nx + col.long()).reshape(a.shape[0], *([1] * (a.dim() - 3)), row.shape[-1])
    return torch.gather(flat, -1, idx.expand(*flat.shape[:-1], row.shape[-1]))


def station_forward(net: Any, obs: torch.Tensor, obs_mask: torch.Tensor, forcing: torch.Tensor,
                    forcing_mask: torch.Tensor, static: torch.Tensor, row: torch.Tensor,
                    col: torch.Tensor, parts: bool = False, members: bool = False,
                    aux: bool = False, base_too: bool = False) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """AQNet's forecast at the station cells only -> [B, L, 2, 3, S] (ug m-3); with `parts`, the decoder's
    (p50, lower gap, upper gap) in normalised log space instead, each [B, L, 2, S] (for calibration); with
    `members`, each ensemble member's own forecast [M, B, L, 2, 3, S] (M = 1 for one net; for the loss), and
    with `aux` too, also each member's auxiliary P50 [M, B, L, n_aux, S] (`model.aux_targets`).

    The model's own encoder (`net.state`) runs on the whole grid; its per-cell decoder (`net.decode`, exact
    when `decoder_kernel == 1`) and the future-forcing features run on the S station cells laid out as an
    S x 1 "grid" instead of all Y x X cells (~4x faster training on CPU). `AQModule` checks it against
    `net.forward` before using it.
    """
    z, base = net.state(obs, obs_mask, forcing, forcing_mask, static)
    zs = at_stations(z, row, col).unsqueeze(-1)  # [B, hidden, S, 1]
    bs = at_stations(base, row, col).unsqueeze(-1)
    f = at_stations(forcing, row, col).unsqueeze(-1)  # [B, H + L, Cf, S, 1]
    fm = at_stations(forcing_mask, row, col).unsqueeze(-1)
    fut = net.future_features(f, fm)
    if parts:  # with `base_too` also the skip's base at the stations [B, C, S] (what the P50 blend is fitted on)
        out = tuple(p[..., 0] for p in net.decode_parts(zs, fut, bs))
        return out + (bs[..., 0],) if base_too else out
    if members and aux:
        return tuple(p[..., 0] for p in net.decode_members(zs, fut, bs, aux=True))
    if members:
        return net.decode_members(zs, fut, bs)[..., 0]
    return net.decode(zs, fut, bs)[..., 0]


def check_station_forward(net: Any, batch: dict[str, torch.Tensor], atol: float = 1e-3) -> float:
    """max |station_forward - gather(net.forward)| on (up to) two items of `batch`; inf if it fails."""
    from models.losses import gather_stations

    try:
        with torch.no_grad():
            x = [batch[k][:2] for k in INPUTS]
            r, c = batch["station_row"][:2], batch["station_col"][:2]
            ref = gather_stations(net(*x), r, c)
            fast = station_forward(net, *x, r, c)
        return float((ref - fast).abs().max()) if ref.shape == fast.shape else float("inf")
    except Exception:  # noqa: BLE001 - any mismatch with the model's internals means: do not use it
        return float("inf")


class ValStats:
    """Running sums over validation batches -> per-lead metrics (numpy, [L, 2] arrays)."""

    def __init__(self, leads: int):
        z = lambda: np.zeros((leads, 2))
        self.abs_in, self.n_in, self.abs_out, self.n_out = z(), z(), z(), z()
        self.cover, self.abs_pm, self.abs_pp, self.n_p = z(), z(), z(), z()

    def update(self, q: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, in_input: torch.Tensor,
               withheld: torch.Tensor, persist: torch.Tensor, persist_ok: torch.Tensor) -> None:
        """q [B, L, 2, 3, S]; target/mask [B, L, 2, S]; in_input/withheld [B, S]; persist(_ok) [B, 2, S]."""
        err = (q[:, :, :, 1] - target).abs() * mask
        cov = ((target >= q[:, :, :, 0]) & (target <= q[:, :, :, 2])).float() * mask
        m_in, m_out = mask * in_input[:, None, None], mask * withheld[:, None, None]
        m_p = m_in * persist_ok[:, None]
        self.abs_in += (err * m_in).sum((0, 3)).double().numpy()
        self.n_in += m_in.sum((0, 3)).double().numpy()
        self.abs_out += (err * m_out).sum((0, 3)).double().numpy()
        self.n_out += m_out.sum((0, 3)).double().numpy()
        self.cover += (cov * in_input[:, None, None]).sum((0, 3)).double().numpy()
        self.abs_pm += (err * m_p).sum((0, 3)).double().numpy()
        self.abs_pp += ((persist[:, None] - target).abs() * m_p).sum((0, 3)).double().numpy()
        self.n_p += m_p.sum((0, 3)).double().numpy()

    @staticmethod
    def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.where(b > 0, a / np.maximum(b, 1), np.nan)

    def per_lead(self) -> dict[str, np.ndarray]:
        """{mae_in, mae_out, coverage, mae_persistence, skill_persistence}: [L, 2] each."""
        mae_m, mae_p = self._div(self.abs_pm, self.n_p), self._div(self.abs_pp, self.n_p)
        return {"mae": self._div(self.abs_in, self.n_in), "mae_heldout": self._div(self.abs_out, self.n_out),
                "coverage": self._div(self.cover, self.n_in), "mae_persistence": mae_p,
                "skill_persistence": 1 - self._div(mae_m, mae_p)}

    def scalars(self) -> dict[str, float]:
        """Flat metrics: overall and at leads 24/48/72 for each species."""
        out: dict[str, float] = {}
        pl = self.per_lead()
        tot_in, tot_out = self.n_in.sum(0), self.n_out.sum(0)
        for k, sp in enumerate(SPECIES):
            out[f"val_mae_{sp}"] = float(self.abs_in[:, k].sum() / max(tot_in[k], 1))
            if tot_out[k] > 0:
                out[f"val_mae_heldout_{sp}"] = float(self.abs_out[:, k].sum() / tot_out[k])
            out[f"val_coverage_{sp}"] = float(self.cover[:, k].sum() / max(tot_in[k], 1))
            for lead in REPORT_LEADS:
                if lead <= pl["mae"].shape[0]:
                    for name in ("mae", "mae_heldout", "mae_persistence", "skill_persistence"):
                        v = pl[name][lead - 1, k]
                        if np.isfinite(v):
                            out[f"val_{name}_{sp}_h{lead}"] = float(v)
        return out


class AQModule(CosineBudget, L.LightningModule):
    """Wraps `models.build_model(cfg.model, channels, norm_stats)` for training."""

    def __init__(self, cfg: TrainConfig, channels: dict[str, list[str]], norm_stats: dict[str, Any]):
        super().__init__()
        from models import build_model

        self.cfg = cfg
        self.channels, self.norm_stats = channels, norm_stats
        self.net = build_model(cfg.model, channels, norm_stats)
        self.quantiles = tuple(cfg.model.get("quantiles", (0.1, 0.5, 0.9)))
        self.stats = ValStats(cfg.data.leads)
        self.collect = False  # when True, validation keeps station forecasts + one grid for the plots
        self.collected: dict[str, list[np.ndarray]] = {}
        self.fast: bool | None = None if cfg.model.get("decoder_kernel", 1) == 1 else False
        self.skipped_updates = 0
        self.init_schedule(cfg.optim.schedule_steps)
        self.precision = resolve_precision(cfg.optim.precision)  # of the training steps (training.precision)
        self.persist_idx = [channels["obs"].index(f"obs_{s}") if f"obs_{s}" in channels["obs"] else -1
                            for s in SPECIES]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.net(*inputs)

    def station_quantiles(self, batch: dict[str, torch.Tensor], members: bool = False) -> torch.Tensor:
        """Forecast at the target stations [B, L, 2, 3, S] (with `members`, each member's [M, B, L, 2, 3, S]):
        the fast path once it matched `net.forward`."""
        from models.losses import gather_stations

        if self._fast_ok(batch):
            return station_forward(self.net, *(batch[k] for k in INPUTS), batch["station_row"],
                                   batch["station_col"], members=members)
        if members:
            grids = self.net.forward_members(*(batch[k] for k in INPUTS))
            return torch.stack([gather_stations(g, batch["station_row"], batch["station_col"]) for g in grids])
        return gather_stations(self.net(*(batch[k] for k in INPUTS)), batch["station_row"], batch["station_col"])

    def _fast_ok(self, batch: dict[str, torch.Tensor]) -> bool:
        """Whether the station-only forward matches the model's (checked once, on the first batch)."""
        if self.fast is None:
            diff = check_station_forward(self.net, batch)
            self.fast = diff < 1e-3 * max(1.0, float(batch["target"].abs().max()))
            if not self.fast:
                logging.getLogger(__name__).warning("station-only forward differs from the model's forward "
                                                    "(max diff %.3g): training on the full grid", diff)
        return bool(self.fast)

    def _loss(self, q: torch.Tensor, batch: dict[str, torch.Tensor], mask: torch.Tensor,
              station_weight: torch.Tensor | None = None) -> torch.Tensor:
        """Masked pinball on station quantiles q [B, L, 2, 3, S] (as a 1 x S "grid"), each station's entries
        weighted by `station_weight` [B, S] (default 1)."""
        from models.losses import masked_pinball

        o = self.cfg.optim
        n_s = q.shape[-1]
        zeros = torch.zeros(q.shape[0], n_s, dtype=torch.long)
        cols = torch.arange(n_s).expand(q.shape[0], n_s)
        return masked_pinball(q.unsqueeze(4), batch["target"], mask, zeros, cols, quantiles=self.quantiles,
                              space=o.loss_space, species_weight=o.species_weight,
                              species_scale=o.species_scale, station_weight=station_weight,
                              level_power=o.level_power)

    def _dropped_weight(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Training's per-station loss weight [B, S]: `optim.dropped_weight` at stations withheld from this
        sample's inputs by the station drop-out (the case of a cell with no station), 1 elsewhere; None at 1."""
        dw = self.cfg.optim.dropped_weight
        if dw == 1.0 or "station_in_input" not in batch:
            return None
        return 1.0 + (dw - 1.0) * (1.0 - batch["station_in_input"])

    def member_losses(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[M] masked pinball loss of each ensemble member's own forecast (M = 1 for one net), plus
        `optim.aux_weight` times its auxiliary targets' loss where the batch has them (training), in the
        training steps' precision (`optim.precision`)."""
        with step_context(self.precision, batch["target"].device.type):
            return self._member_losses(batch)

    def _member_losses(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        sw = self._dropped_weight(batch)
        if "aux_target" not in batch or not self.cfg.model.get("aux_targets") or not self._fast_ok(batch):
            return torch.stack([self._loss(q, batch, batch["target_mask"], sw)
                                for q in self.station_quantiles(batch, members=True)])
        qs, aux = station_forward(self.net, *(batch[k] for k in INPUTS), batch["station_row"],
                                  batch["station_col"], members=True, aux=True)
        return torch.stack([self._loss(q, batch, batch["target_mask"], sw) + self.cfg.optim.aux_weight
                            * self._aux_loss(a, batch) for q, a in zip(qs, aux, strict=True)])

    def _aux_loss(self, a: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Masked pinball (P50) in log1p units of the auxiliary P50 a [B, L, n_aux, S] (normalised log space)."""
        norm = self.net.aux_norm
        keep = batch["aux_mask"] > 0.5
        t = norm(torch.where(keep, batch["aux_target"], torch.zeros_like(batch["aux_target"])), dim=2)
        err = (t - a) * norm.std.reshape(1, 1, -1, 1)
        return 0.5 * torch.where(keep, err.abs(), torch.zeros_like(err)).sum() / keep.sum().clamp(min=1)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Each ensemble member on its own loss (summed, so each gets the gradient it would get alone; one net
        is the M = 1 case); `train_loss` logs their mean."""
        if self.cfg.optim.mirror_prob > 0:
            from training.augment import random_mirror, wind_channels

            batch = random_mirror(batch, self.cfg.optim.mirror_prob, *wind_channels(self.channels["forcing"]))
        if self.cfg.optim.obs_noise > 0:
            from training.augment import noisy_obs

            batch = noisy_obs(batch, self.cfg.optim.obs_noise)
        losses = self.member_losses(batch)
        self.log("train_loss", losses.mean(), prog_bar=True, batch_size=batch["target"].shape[0])
        return losses.sum()

    def configure_gradient_clipping(self, optimizer: Any, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """Clip each ensemble member's gradient norm on its own (as if it trained alone). A member whose
        gradient is not finite (an overflowing forecast on one sample) sits this step out: its gradient is
        zeroed and counted (`skipped_updates`, warned), so one bad step cannot turn its weights into NaN (M31)."""
        members = getattr(self.net, "members", None) or [self.net]
        for m in members:
            grads = [p.grad for p in m.parameters() if p.grad is not None]
            if grads and not all(bool(torch.isfinite(g).all()) for g in grads):
                for g in grads:
                    g.zero_()
                self.skipped_updates += 1
                logging.getLogger(__name__).warning("step %d: non-finite gradient, update skipped for a network "
                                                    "(%d so far)", int(self.global_step), self.skipped_updates)
        if len(members) == 1 or not gradient_clip_val:
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        for m in members:
            torch.nn.utils.clip_grad_norm_(m.parameters(), gradient_clip_val)

    def on_train_epoch_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and dm.train_ds is not None:
            dm.train_ds.set_epoch(self.current_epoch)  # new station drop-out draw each epoch

    def on_validation_epoch_start(self) -> None:
        self.stats = ValStats(self.cfg.data.leads)
        self.collected = {}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        q = self.station_quantiles(batch)  # [B, L, 2, 3, S]
        in_input = batch["station_in_input"]
        withheld = batch.get("station_withheld", 1 - in_input)
        loss = self._loss(q, batch, batch["target_mask"] * in_input[:, None, None])
        self.log("val_loss", loss, prog_bar=True, batch_size=q.shape[0])
        persist, ok = self._persistence(batch)
        self.stats.update(q.float().cpu(), batch["target"].cpu(), batch["target_mask"].cpu(), in_input.cpu(),
                          withheld.cpu(), persist.cpu(), ok.cpu())
        if self.collect:
            c = self.collected
            c.setdefault("q", []).append(q.cpu().numpy())
            c.setdefault("target", []).append(batch["target"].cpu().numpy())
            c.setdefault("mask", []).append(batch["target_mask"].cpu().numpy())
            c.setdefault("init_time", []).append(batch["init_time"].cpu().numpy())
            if "grid" not in c:  # [L, 2, Y, X] P50 of the first init (full-grid forward)
                c["grid"] = [self.net(*(batch[k][:1] for k in INPUTS))[0, :, :, 1].cpu().numpy()]

    def _persistence(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Last observed value at init at each target station's cell: ([B, 2, S], valid [B, 2, S])."""
        b, s = batch["station_row"].shape
        nx = batch["obs"].shape[-1]
        cell = (batch["station_row"].long() * nx + batch["station_col"].long())  # [B, S]
        vals, oks = [], []
        for idx in self.persist_idx:
            if idx < 0:
                vals.append(torch.zeros(b, s))
                oks.append(torch.zeros(b, s))
                continue
            last = batch["obs"][:, -1, idx].reshape(b, -1)
            m = batch["obs_mask"][:, -1, idx].reshape(b, -1)
            vals.append(torch.gather(last, 1, cell))
            oks.append(torch.gather(m, 1, cell) * batch["station_in_input"])
        return torch.stack(vals, 1), torch.stack(oks, 1)

    def on_validation_epoch_end(self) -> None:
        for k, v in self.stats.scalars().items():
            self.log(k, v, prog_bar=k in ("val_mae_pm25_h24",))

    def configure_optimizers(self) -> Any:
        o = self.cfg.optim
        opt = torch.optim.AdamW(self.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        if o.schedule == "plateau":
            sch = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=max(1, o.patience // 2))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sch, "monitor": "val_loss"}}
        self._planned = max(1, int(self.trainer.estimated_stepping_batches))
        sch = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: self._lr_share(step))  # warm-up, then the cosine
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sch, "interval": "step"}}
