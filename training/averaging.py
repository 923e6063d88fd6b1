"""Weight averaging after early stopping (`optim.average_weights`, decisions M37/M38): the registered weights are
the mean of the weights at every validation from the validation-loss minimum to the end of training (`tail`,
the weights training ended with included when it stopped between validations, e.g. at the time cap), or of the
best validation's weights (`best.ckpt`) and those training ended with (`best_last`). Chosen before the P10/P90
calibration, which is then fitted to the averaged model; `none` keeps the early-stopped epoch's weights.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch


def _floats(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The floating tensors of a state dict, in float64 (a mean of equal float32 values is then exact)."""
    return {k: v.detach().to("cpu", torch.float64, copy=True) for k, v in sd.items() if v.is_floating_point()}


class TailAverage(L.Callback):
    """Running sum of the model's weights at each validation since the best `monitor` so far (a new best
    restarts it), plus the final weights when training ends between validations. Its state travels in the
    checkpoints, so `--resume` continues the same average."""

    def __init__(self, monitor: str = "val_loss"):
        self.monitor = monitor
        self.best = math.inf
        self.sum: dict[str, torch.Tensor] | None = None
        self.steps: list[int] = []

    def _add(self, pl_module: Any, step: int, restart: bool) -> None:
        w = _floats(pl_module.state_dict())
        if restart or self.sum is None:
            self.sum, self.steps = w, [step]
        else:
            for k, v in w.items():
                self.sum[k] += v
            self.steps.append(step)

    def on_validation_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        v = float(trainer.callback_metrics[self.monitor])
        if not math.isfinite(v) or (self.steps and self.steps[-1] == trainer.global_step):
            return
        restart = v < self.best
        self.best = min(self.best, v)
        self._add(pl_module, trainer.global_step, restart)

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if self.sum is not None and trainer.global_step > self.steps[-1]:
            self._add(pl_module, trainer.global_step, restart=False)

    def averaged(self) -> dict[str, torch.Tensor] | None:
        """Mean weights (float64) by state-dict key, or None before the first validation."""
        return None if self.sum is None else {k: v / len(self.steps) for k, v in self.sum.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "best": self.best, "sum": self.sum, "steps": list(self.steps)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.sum, self.steps = state["best"], state["sum"], list(state["steps"])


def _load_into(module: Any, weights: dict[str, torch.Tensor]) -> None:
    sd = module.state_dict()
    module.load_state_dict({k: weights[k].to(v.dtype) if k in weights else v for k, v in sd.items()})


def choose_weights(method: str, module: Any, trainer: L.Trainer, run_dir: Path) -> dict[str, Any]:
    """Load the weights the run registers into `module` -> what was done (for the model card and MLflow)."""
    path, step = run_dir / "best.ckpt", int(trainer.global_step)
    if not path.is_file():  # never validated: the final weights
        return {"method": "none", "steps": [step], "n": 1}
    best = torch.load(path, map_location="cpu", weights_only=False)
    out: dict[str, Any] = {"method": method, "best_step": int(best["global_step"])}
    tail = next((c for c in trainer.callbacks if isinstance(c, TailAverage)), None)
    if method == "tail" and tail is not None and tail.averaged() is not None:
        _load_into(module, tail.averaged())
        return out | {"steps": list(tail.steps), "n": len(tail.steps)}
    if method == "best_last" and step > out["best_step"]:  # the module holds the weights training ended with
        b, final = _floats(best["state_dict"]), _floats(module.state_dict())
        _load_into(module, {k: 0.5 * (v + final[k]) for k, v in b.items()})
        return out | {"steps": [out["best_step"], step], "n": 2}
    module.load_state_dict(best["state_dict"])
    return out | {"steps": [out["best_step"]], "n": 1}
