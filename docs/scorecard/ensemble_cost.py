"""What `model.members` costs: one training step per member count, and one exported forecast per artifact.

    python docs/scorecard/ensemble_cost.py STORE [--members 1 2 3] [--set KEY=VALUE ...] [--artifacts DIR ...]
        [--plain-heap]

Training step: batch of the Beijing config (`configs/beijing.yaml`, `model.members=M`, plus each `--set` override
on its own, e.g. `model.species_decoders=true`) from STORE, forward +
backward + AdamW at the station cells as in training, 2 threads, median of 15 after 3 warm-up steps, with
malloc keeping freed memory as `aqcast train` does (`training.heap`, M23) unless `--plain-heap`.
Artifact: one 72-h forecast of the artifact's whole grid (batch 1, random inputs in range) with onnxruntime,
2 threads, median of 20 after 3 warm-up runs.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def step_seconds(store: str, members: int, repeat: int = 15, sets: tuple[str, ...] = ()) -> float:
    import torch

    from training.config import load_config
    from training.datamodule import AQDataModule
    from training.module import AQModule

    torch.manual_seed(0)
    cfg = load_config(ROOT / "configs" / "beijing.yaml", [f"model.members={members}", *sets])
    dm = AQDataModule(cfg, Path(store))
    dm.setup("fit")
    mod = AQModule(cfg, dm.channels, json.loads(dm.ds.attrs["norm_stats"]))
    batch = next(iter(dm.train_dataloader()))
    opt = torch.optim.AdamW(mod.parameters(), 1e-3)

    def step() -> None:
        loss = mod.member_losses(batch).sum()  # as `AQModule.training_step`
        opt.zero_grad()
        loss.backward()
        opt.step()

    ts = []
    for i in range(3 + repeat):
        t0 = time.perf_counter()
        step()
        if i >= 3:
            ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def forecast_seconds(art: Path, repeat: int = 20) -> tuple[int, float, str]:
    import onnxruntime as ort

    from training.export import random_inputs

    card = json.loads((art / "model_card.json").read_text())
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(art / "model.onnx"), so, providers=["CPUExecutionProvider"])
    g = json.loads(card["grid"])
    x = random_inputs(card["channels"], card["history"], card["leads"], g["ny"], g["nx"], 1, 0, card["norm_stats"])
    ts = []
    for i in range(3 + repeat):
        t0 = time.perf_counter()
        sess.run(None, x)
        if i >= 3:
            ts.append(time.perf_counter() - t0)
    return int(card.get("ensemble_members", 1)), float(np.median(ts)), f"{g['ny']} x {g['nx']}"


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store")
    ap.add_argument("--members", type=int, nargs="*", default=[1, 2, 3])
    ap.add_argument("--artifacts", nargs="*", default=[])
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="a config override timed on its own beside the plain config (repeatable)")
    ap.add_argument("--plain-heap", action="store_true", help="glibc's default malloc (before M23)")
    a = ap.parse_args()
    torch.set_num_threads(2)
    if not a.plain_heap:
        from training.heap import retain_freed_memory

        retain_freed_memory()
    print("| what | members | median |\n|---|---|---|")
    for m in a.members:
        print(f"| training step, batch 16 | {m} | {step_seconds(a.store, m):.3f} s |")
        for s in a.sets:
            print(f"| training step, batch 16, {s} | {m} | {step_seconds(a.store, m, sets=(s,)):.3f} s |")
    for d in a.artifacts:
        m, s, grid = forecast_seconds(Path(d))
        print(f"| 72-h forecast, {grid} cells, onnxruntime ({Path(d).name}) | {m} | {1000 * s:.1f} ms |")


if __name__ == "__main__":
    main()
