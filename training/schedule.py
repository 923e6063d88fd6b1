"""The learning-rate schedule and the clock: warm-up + cosine, fitted to (or checked against) the time cap.

`CosineBudget` is a LightningModule mixin: a speed probe fits the cosine to `optim.max_minutes` (M12) or warns
that the cap will cut a pinned one (M22), and at the end says where the cap stopped it.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any


def lr_factor(step: int, warm: int, total: int, schedule: str = "cosine") -> float:
    """Learning-rate multiplier at `step`: linear warm-up over `warm` steps, then (cosine) down to 0.05 at
    `total` steps and flat after; 1 after the warm-up with schedule "none"."""
    if step < warm:
        return (step + 1) / (warm + 1)
    if schedule == "none":
        return 1.0
    p = min(1.0, (step - warm) / max(1, total - warm))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p))


def budget_steps(planned: int, step: int, seconds_per_step: float, seconds_left: float) -> int:
    """Steps the cosine may span: the planned total, or fewer if the rest would not fit in `seconds_left`."""
    fit = step + int(max(0.0, seconds_left) / max(seconds_per_step, 1e-9))
    return max(step + 1, min(planned, fit))


class CosineBudget:
    """Schedule state and hooks for a LightningModule with `cfg.optim` (mixed in before L.LightningModule)."""

    cfg: Any
    global_step: int
    trainer: Any

    def init_schedule(self, pinned: int | None) -> None:
        """Call from __init__: `pinned` is `optim.schedule_steps` (None: fitted to the cap by the probe)."""
        self.sched_total: int | None = pinned  # cosine length; fitted to the budget if None
        self._clock: tuple[float, int] | None = None
        self._planned = 1  # the trainer's planned steps (set in configure_optimizers)
        self._schedule_checked = False  # the speed probe ran (fits or checks the cosine once a run)
        self._settled: tuple[float, int] | None = None  # clock and step once the probe's settling steps ran
        self.budget_warning: str | None = None  # the probe's warning, repeated by `aqcast train` at the end
        self.schedule_note: str | None = None  # where the clock cap stopped a pinned cosine (on_train_end)

    SETTLE_STEPS, PROBE_STEPS = 100, 100  # the first ~120 steps can run 1.5x slower than the rest (M52): not timed

    def on_train_start(self) -> None:
        self._clock, self._settled = (time.monotonic(), int(self.global_step)), None

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Time PROBE_STEPS steps after SETTLE_STEPS, then fit the cosine to end within 85 % of the time left
        (room for validation) at that speed; fixed once, saved in checkpoints (resume keeps it), logged as
        `lr_schedule_steps`. A pinned `optim.schedule_steps` is kept, with a warning when the cap (less ~5 % for
        validation) looks set to cut it below 60 % (`on_train_end` then says what happened)."""
        o = self.cfg.optim
        if self._schedule_checked or not o.max_minutes or self._clock is None:
            return
        t0, s0 = self._clock
        step = int(self.global_step)
        settle = min(self.SETTLE_STEPS, max(0, self._planned // 20))
        if self._settled is None:
            if step - s0 >= settle:
                self._settled = (time.monotonic(), step)
            return
        t1, s1 = self._settled
        if step - s1 < min(self.PROBE_STEPS, max(1, self._planned // 4)):
            return
        now, self._schedule_checked = time.monotonic(), True
        rate, cap = (now - t1) / (step - s1), o.max_minutes * 60
        if self.sched_total is None:
            self.sched_total = budget_steps(self._planned, step, rate, 0.85 * cap - (now - t0))
            return
        fit = budget_steps(self.sched_total, step, rate, 0.95 * cap - (now - t0))  # best guess: ~5 % validating
        if fit < 0.6 * self.sched_total:  # a pinned cosine the cap will cut with the learning rate still high
            self.budget_warning = (
                f"at {rate:.2f} s a step (steps {s1}-{step}) the {o.max_minutes:g}-min cap is set to stop training "
                f"near step {fit} of the pinned schedule's {self.sched_total}, the learning rate still "
                f"{self._lr_share(fit):.0%} of its peak (a VM that stopped at 775 of 2184 forecast PM2.5 2.4 ug m-3 "
                "worse at 24 h, docs/decisions.md M22): raise optim.max_minutes, or set optim.schedule_steps=null "
                "to fit the cosine to the cap")
            logging.getLogger(__name__).warning(self.budget_warning)

    def _lr_share(self, step: int) -> float:
        """The scheduled learning rate at `step`, as a share of its peak (the LambdaLR's factor)."""
        o = self.cfg.optim
        return lr_factor(step, min(o.warmup_steps, self._planned // 4), self.sched_total or self._planned,
                         o.schedule)

    def on_train_end(self) -> None:
        """Replace the probe's forecast with what happened: where the clock cap stopped the cosine before its
        end (`schedule_note`), and a warning only if that was below 60 % of it."""
        timer = next((c for c in self.trainer.callbacks if type(c).__name__ == "Timer"), None)
        step, total = int(self.global_step), self.sched_total
        if not timer or not total:
            return
        stopped = step < total and (timer.time_remaining() or 0) <= 0
        self.schedule_note = (f"the {self.cfg.optim.max_minutes:g}-min cap stopped training at step {step} of the "
                              f"{total}-step cosine, the learning rate at {self._lr_share(step):.0%} of its peak"
                              ) if stopped else None
        self.budget_warning = (f"{self.schedule_note}: raise optim.max_minutes, or set optim.schedule_steps=null "
                               "(docs/decisions.md M22)") if stopped and step < 0.6 * total else None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lr_schedule_steps"] = self.sched_total

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.sched_total = checkpoint.get("lr_schedule_steps", self.sched_total)
