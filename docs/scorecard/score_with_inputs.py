"""Score a model with input stations it did not train with (a diagnostic of the station learning curve).

    AQCAST_HOME=/tmp/bj python docs/scorecard/score_with_inputs.py --model models:/aqcast/46 \
        --store /tmp/bj/store.zarr --held-out Dongsi,Dingling --from 2015-03-01T00:00+08:00 \
        --to 2016-02-29T23:00+08:00 --every 6h --name wi-46

`aqcast evaluate` never feeds a model the stations it was trained without (they stay held out). This does: the
model's own held-out list is replaced by `--held-out`, so stations the model never saw become inputs, as they do
in the backtest contract (every station of the data directory is an input there). A model trained on fewer
stations, scored with the same inputs and at the same held-out stations as one trained on more, measures what
the extra training stations bought (docs/experiments-beijing-13.md). Logged to MLflow like `aqcast evaluate`.
"""
from __future__ import annotations

import argparse

from features.store import open_store
from training.evaluate import evaluate_model, load_model, log_to_mlflow


def with_inputs(meta: dict, held_out: list[str]) -> dict:
    """The model metadata with `held_out` as its only held-out stations (no training-station list)."""
    out = {k: v for k, v in meta.items() if k != "train_stations"}
    out["held_out_stations"] = list(held_out)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for a in ("--model", "--store", "--held-out", "--from", "--to"):
        p.add_argument(a, required=True)
    p.add_argument("--every", default="6h")
    p.add_argument("--out", default="evaluation")
    p.add_argument("--name", default=None)
    a = p.parse_args(argv)
    net, meta = load_model(a.model)
    held = [s.strip() for s in a.held_out.split(",") if s.strip()]
    m = with_inputs(meta, held)
    note = f"model {a.model} scored with inputs it did not train with (held out: {', '.join(held)})"
    rep = evaluate_model(net, m, open_store(a.store), getattr(a, "from"), a.to, a.every, held, a.out,
                         source=a.store, name=a.name, extra_notes=[note])
    print(rep["scorecard"].read_text())
    log_to_mlflow(rep, meta, {"model": a.model, "store": a.store, "from": getattr(a, "from"), "to": a.to,
                              "every": a.every, "held_out": ",".join(rep["held_out"]), "inputs": "untrained"})
    return rep


if __name__ == "__main__":
    main()
