"""`aqcast runs`: the runs of an MLflow experiment side by side (what differs in their configs, their scores).

Forecasters compare challengers with it before promoting one; the architecture search of the Beijing model is
reported with it (docs/experiments-beijing.md). Scores are the `final_val_*` metrics that `aqcast train` logs
for the checkpoint it registered (validation period, inits every `data.val_every_h`, input stations and
held-out stations), so every run in one experiment is scored on the same samples when they share the data
section of their config.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

SCORES = (("pm25", "mae"), ("o3", "mae"))
LEADS = (24, 48, 72)
IGNORED = ("tracking.", "data.store", "data.data_dir", "window.", "channels.", "n_train_inits", "n_val_inits")


def collect(experiment: str, tracking_uri: str | None = None) -> list[dict[str, Any]]:
    """Finished runs of `experiment` (oldest first): name, run id, params, final_val metrics, model URI."""
    import mlflow

    from features.errors import DataError
    from training.tracking import tracking_uri as resolve_uri

    mlflow.set_tracking_uri(resolve_uri(tracking_uri))
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        raise DataError(f"no MLflow experiment named {experiment!r} at {resolve_uri(tracking_uri)}")
    client = mlflow.tracking.MlflowClient()
    out = []
    for r in client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"], max_results=500):
        m = r.data.metrics
        if not any(k.startswith("final_val_") for k in m):
            continue  # unfinished, killed or not a training run
        out.append({"name": r.info.run_name, "run_id": r.info.run_id, "params": dict(r.data.params),
                    "metrics": m, "model": r.data.tags.get("registered_model", ""),
                    "steps": int(m.get("global_step", 0)), "seconds": m.get("train_seconds")})
    return out


def differing_params(runs: list[dict[str, Any]]) -> list[str]:
    """Config keys whose value is not the same in every run (tracking/paths left out)."""
    keys = sorted({k for r in runs for k in r["params"]})
    keep = []
    for k in keys:
        if k.startswith(IGNORED):
            continue
        if len({r["params"].get(k, "—") for r in runs}) > 1:
            keep.append(k)
    return keep


def _as_list(v: str) -> list[str] | None:
    """A list-valued param ('["a", "b"]' or 'a,b,c') as a list; None for scalars."""
    import json

    try:
        x = json.loads(v)
        return [str(i) for i in x] if isinstance(x, list) else None
    except (TypeError, ValueError):
        return v.split(",") if "," in v and " " not in v else None


def cell(value: str, first: str | None) -> str:
    """Long list values as their difference from the first run's ('+sun_cosz'), others as they are."""
    a, b = _as_list(value), _as_list(first) if first is not None else None
    if a is None or b is None or len(value) <= 24:
        return value
    added, removed = [x for x in a if x not in b], [x for x in b if x not in a]
    return " ".join([f"+{x}" for x in added] + [f"−{x}" for x in removed]) or "(as first run)"


def table(runs: list[dict[str, Any]]) -> str:
    """Markdown: one row per run, config differences then MAE at 24/48/72 h (input and held-out stations)."""
    diff = differing_params(runs)
    cols = ["run", "model URI", *[d.removeprefix("model.").removeprefix("optim.") for d in diff], "steps", "s"]
    for sp, _ in SCORES:
        cols += [f"{sp} MAE {h} h" for h in LEADS] + [f"{sp} held-out {h} h" for h in LEADS] + [f"{sp} cov"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]

    def f(v: Any) -> str:
        return "—" if v is None else f"{v:.1f}"

    for r in runs:
        m = r["metrics"]
        row = [r["name"], r["model"], *[cell(r["params"].get(d, "—"), runs[0]["params"].get(d)) for d in diff],
               str(r["steps"]),
               f(r["seconds"])]
        for sp, _ in SCORES:
            row += [f(m.get(f"final_val_mae_{sp}_h{h}")) for h in LEADS]
            row += [f(m.get(f"final_val_mae_heldout_{sp}_h{h}")) for h in LEADS]
            cov = m.get(f"final_val_coverage_{sp}")
            row.append("—" if cov is None else f"{100 * cov:.0f} %")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def runs_command(
    experiment: str = typer.Option("aqcast-beijing", "--experiment", "-e", help="MLflow experiment name"),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (default: SQLite in "
                                     "$AQCAST_HOME)"),
    out: str = typer.Option(None, "--out", help="also write the markdown table to this file"),
) -> None:
    """Compare an experiment's finished training runs: config differences and validation MAE by lead."""
    from features.errors import DataError

    try:
        runs = collect(experiment, tracking_uri)
    except DataError as err:
        for problem in err.problems:
            typer.secho(f"error: {problem}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    if not runs:
        typer.echo(f"experiment {experiment!r} has no finished training run")
        raise typer.Exit(1)
    md = table(runs)
    typer.echo(md)
    if out:
        Path(out).write_text(md + "\n")
        typer.echo(f"wrote {out}")
