"""Weight averaging after the fact: the registered model with its learned weights replaced by the mean of the
run's best and last training checkpoints (its calibration buffers and metadata kept).

    AQCAST_HOME=… python docs/scorecard/average_checkpoints.py RUN_DIR --model models:/aqcast/7 --out DIR
    AQCAST_HOME=… aqcast evaluate --model DIR --data ../shared/data/beijing --store STORE --from … --every 6h

RUN_DIR is the run's checkpoint directory (`best.ckpt`, `last.ckpt`, as `aqcast train` leaves them under
`$AQCAST_HOME/runs/NAME`); the model must be that run's registered version (its weights are checked against
`best.ckpt`). The P10/P90 calibration stays the one fitted to the best epoch, so only the P50 scores (MAE) of the
result are the averaged model's own; its band would need the calibration refitted.

Round twenty's measurement (decision M37). Training now does this itself, calibration included
(`optim.average_weights`, M38); the script stays for scoring runs trained without it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

KEEP = ("gap_scale", "gap_hour")  # post-hoc calibration: fitted after training, not in the checkpoints' sense
REGISTRY_KEYS = ("uri", "version", "model_uri", "alias")  # added by load_model from the registry


def average_into(sd: dict, best: dict, last: dict, keep: tuple[str, ...] = KEEP) -> int:
    """Replace each floating tensor of the model's state dict `sd` but `keep` by the mean of the Lightning
    checkpoints' `net.<name>` in `best` and `last` (state dicts); -> the number of tensors averaged. Raises
    ValueError when `sd` is not `best`'s weights."""
    import torch

    n = 0
    for k, v in sd.items():
        if k.split(".")[-1] in keep or not v.is_floating_point():
            continue
        b, last_v = best[f"net.{k}"], last[f"net.{k}"]
        if not torch.equal(v, b):
            raise ValueError(f"{k}: the model's weights are not those of the best checkpoint")
        sd[k] = 0.5 * (b + last_v)
        n += 1
    return n


def main() -> None:
    import torch

    from training.tracking import MODEL_FILE, load_model, save_checkpoint

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--model", required=True, help="the run's registered version, e.g. models:/aqcast/7")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    missing = [str(a.run_dir / f"{n}.ckpt") for n in ("best", "last") if not (a.run_dir / f"{n}.ckpt").is_file()]
    if missing:
        raise SystemExit(f"no training checkpoint at {', '.join(missing)}: RUN_DIR is $AQCAST_HOME/runs/NAME of the run")
    net, meta = load_model(a.model)
    for k in REGISTRY_KEYS:  # the result is not that registry version: its scorecard names the --out path
        meta.pop(k, None)
    ckpt = {n: torch.load(a.run_dir / f"{n}.ckpt", map_location="cpu", weights_only=False) for n in ("best", "last")}
    sd = net.state_dict()
    n = average_into(sd, ckpt["best"]["state_dict"], ckpt["last"]["state_dict"])
    net.load_state_dict(sd)
    path = save_checkpoint(a.out / MODEL_FILE, net, meta)
    print(f"{n} tensors averaged: best (epoch {ckpt['best']['epoch'] + 1}, step {ckpt['best']['global_step']}) and "
          f"last (step {ckpt['last']['global_step']}) -> {path}")


if __name__ == "__main__":
    main()
