"""Seconds a training step of registered runs, by stretch of the run, from the MLflow `train_loss` timestamps.

    AQCAST_HOME=/tmp/bj python docs/scorecard/step_speed.py --models 15,16,17

`aqcast train` logs the training loss every 10 steps, so the timestamps time the steps without touching the run:
the stretch the budget probe (`training/schedule.py`) timed before round thirty-one (the first 100 steps, start-up
included, here from the first logged step), steps 20-120, the stretch it times now (100-200), later ones, and the
steps made in the clock. Validation pauses fall inside the stretches that cross an epoch's end (312 steps on Beijing).
"""
from __future__ import annotations

import argparse

STRETCHES = ((10, 110), (20, 120), (100, 200), (120, 300), (400, 600), (800, 1100))


def speeds(client, run_id: str) -> dict[str, float]:
    """Seconds a step over each stretch (a stretch the run did not reach is left out) and the last step."""
    hist = {m.step: m.timestamp / 1000 for m in client.get_metric_history(run_id, "train_loss")}
    out = {f"{a}-{b}": (hist[b] - hist[a]) / (b - a) for a, b in STRETCHES if a in hist and b in hist}
    out["steps"] = max(hist) if hist else 0
    return out


def main(argv: list[str] | None = None) -> str:
    import mlflow

    from training.tracking import tracking_uri

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", required=True, help="comma-separated versions of the registered model")
    ap.add_argument("--name", default="aqcast", help="registered model name")
    ap.add_argument("--tracking-uri", default=None)
    a = ap.parse_args(argv)
    mlflow.set_tracking_uri(tracking_uri(a.tracking_uri))
    client = mlflow.tracking.MlflowClient()
    head = ["version", "run"] + [f"s/step {x}-{y}" for x, y in STRETCHES] + ["steps in the clock"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in a.models.split(","):
        mv = client.get_model_version(a.name, v.strip())
        s = speeds(client, mv.run_id)
        name = client.get_run(mv.run_id).info.run_name
        cells = [f"{s[k]:.3f}" if k in s else "" for k in (f"{x}-{y}" for x, y in STRETCHES)]
        rows.append("| " + " | ".join([v.strip(), name, *cells, str(s["steps"])]) + " |")
    text = "\n".join(rows)
    print(text)
    return text


if __name__ == "__main__":
    main()
