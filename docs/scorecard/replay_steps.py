"""Replay a training run's next epoch from its best checkpoint, step by step, to find where a loss turns non-finite.

    python docs/scorecard/replay_steps.py RUN_DIR --store STORE [--config configs/beijing.yaml] [--set k=v ...]
        [--no-ceiling]

RUN_DIR is `$AQCAST_HOME/runs/<run name>` (it holds `best.ckpt`); `--set` repeats the run's overrides (its seed
above all), so the batches are the run's own: the sampler's draw for the checkpoint's epoch is skipped, then the
next epoch is replayed with AdamW, the learning-rate schedule and the per-network clipping as in training. Prints
each network's loss and gradient norm every 20 steps and stops at the first non-finite one, naming the batch
item, species, lead and init time whose forecast overflowed, and the forcing with the largest |normalised
value| anywhere in that item's window
(docs/experiments-beijing-6.md, M31). `--no-ceiling` lifts the cap on the forecast (`LOG1P_CEILING`, M31) to
replay what the code before it did. Diagnostic only; it writes nothing.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def replay(run_dir: Path, store: str, config: Path, overrides: list[str], every: int = 20,
           echo=print, ceiling: bool = True) -> dict | None:
    """-> {step, member, item, species, lead, forcing_z} of the first non-finite loss, or None."""
    sys.path.insert(0, str(ROOT))
    import models.normalize as mn

    saved = mn.LOG1P_CEILING
    mn.LOG1P_CEILING = saved if ceiling else float("inf")
    try:
        return _replay(run_dir, store, config, overrides, every, echo)
    finally:
        mn.LOG1P_CEILING = saved


def _replay(run_dir: Path, store: str, config: Path, overrides: list[str], every: int, echo) -> dict | None:
    import lightning as L
    import numpy as np
    import torch

    from training.config import load_config
    from training.datamodule import AQDataModule
    from training.module import INPUTS, AQModule, station_forward

    cfg = load_config(config, overrides)
    L.seed_everything(cfg.optim.seed, workers=True, verbose=False)
    dm = AQDataModule(cfg, store)
    dm.setup("fit")
    mod = AQModule(cfg, dm.channels, json.loads(dm.ds.attrs["norm_stats"]))
    ck = torch.load(run_dir / "best.ckpt", map_location="cpu", weights_only=False)
    mod.load_state_dict(ck["state_dict"])
    o = cfg.optim
    opt = torch.optim.AdamW(mod.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    opt.load_state_dict(ck["optimizer_states"][0])
    step, epoch = int(ck["global_step"]), int(ck["epoch"])
    dl = dm.train_dataloader()
    planned = max(1, len(dl) * o.max_epochs)  # the Trainer's estimated stepping batches
    mod._planned, mod.sched_total = planned, ck.get("lr_schedule_steps") or planned  # as in training
    for _ in range(epoch + 1):  # the sampler's draws up to the checkpoint's epoch
        list(dl.sampler)
    dm.train_ds.set_epoch(epoch + 1)
    members = getattr(mod.net, "members", None) or [mod.net]
    for b, batch in enumerate(dl):
        for g in opt.param_groups:
            g["lr"] = o.lr * mod._lr_share(step)  # the LambdaLR's factor (training.schedule)
        opt.zero_grad()
        losses = mod.member_losses(batch)
        losses.sum().backward()
        norms = [float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in m.parameters()
                                                              if p.grad is not None]))) for m in members]
        ok = all(math.isfinite(v) for v in norms + losses.tolist())
        if b % every == 0 or not ok:
            echo(f"step {step}: losses {[round(v, 4) for v in losses.tolist()]}, grad norms "
                 f"{[round(v, 3) for v in norms]}")
        if not ok:
            with torch.no_grad():
                q = station_forward(mod.net, *(batch[k] for k in INPUTS), batch["station_row"],
                                    batch["station_col"], members=True)
                m, item, lead, sp = (int(v) for v in (~torch.isfinite(q)).nonzero()[0][:4])
                fz = members[m].forcing_norm(batch["forcing"][item], dim=1).abs().amax(dim=(0, 2, 3))
            k = int(fz.argmax())
            found = {"step": step, "member": m, "item": item, "species": ("pm25", "o3")[sp], "lead": lead + 1,
                     "init_time": str(np.datetime64(int(batch["init_time"][item]), "ns")),
                     "forcing": dm.channels["forcing"][k], "forcing_z": round(float(fz[k]), 1)}
            echo(f"first non-finite forecast: {found}")
            return found
        for m in members:
            torch.nn.utils.clip_grad_norm_(m.parameters(), o.gradient_clip)
        opt.step()
        step += 1
    echo(f"epoch {epoch + 2}: no non-finite loss in {step - int(ck['global_step'])} steps")
    return None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--store", required=True)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "beijing.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--no-ceiling", action="store_true")
    a = ap.parse_args(argv)
    replay(a.run_dir, a.store, a.config, a.overrides, ceiling=not a.no_ceiling)


if __name__ == "__main__":
    main()
