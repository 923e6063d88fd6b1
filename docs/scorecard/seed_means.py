"""Per-seed and mean scores of several models' `aqcast evaluate` runs, read back from MLflow.

    AQCAST_HOME=/tmp/bj python docs/scorecard/seed_means.py --models 1,2,3 --from 2014-03-01 --every 6h

Each model version's latest evaluation whose `from` starts with the given text and whose `every` matches: MAE at
24 / 48 / 72 h at the input stations beside the trees' MAE on the same samples, the margins below the trees
(1 - deep / trees) and below the best of persistence, climatology and their blend, MAE at the held-out stations,
and the P10-P90 coverage at those leads. The experiment notes' "three-seed means" come from here.
"""
from __future__ import annotations

import argparse
import statistics
from typing import Any

LEADS = (24, 48, 72)
COLUMNS = (("train_stations", "mae", "deep"), ("train_stations", "mae_ref_gbt", "trees"),
           ("train_stations", "margin", "below trees %"), ("train_stations", "simple", "below best simple %"),
           ("held_out_stations", "mae", "held out"),
           ("train_stations", "coverage_p10_p90", "P10-P90 cov"),
           ("held_out_stations", "coverage_p10_p90", "held-out cov"))


def evaluation(client: Any, experiment_id: str, version: str, start: str, every: str,
               rolling_bands: float = 0.0) -> dict[str, float]:
    """Metrics of the latest evaluate run of `models:/aqcast/<version>` from `start…` every `every` (with that
    `--rolling-bands`, 0 = off)."""
    runs = client.search_runs([experiment_id], order_by=["attributes.start_time DESC"], max_results=100,
                              filter_string=(f"params.model = 'models:/aqcast/{version}' and params.every = '{every}'"
                                             f" and params.`from` LIKE '{start}%'"))
    runs = [r for r in runs if float(r.data.params.get("rolling_bands", 0)) == rolling_bands]
    if not runs:
        raise SystemExit(f"no evaluation of models:/aqcast/{version} from {start}… every {every}"
                         f"{f' with --rolling-bands {rolling_bands:g}' if rolling_bands else ''}")
    return dict(runs[0].data.metrics)


def values(m: dict[str, float], group: str, key: str, species: str) -> list[float]:
    """One column's values at LEADS (the margins computed from the MAEs and skills)."""
    if key == "simple":
        return [100 * min(m[f"{group}.{species}.skill_vs_{b}.h{h}"] for b in ("persistence", "climatology", "blend"))
                for h in LEADS]
    if key == "margin":
        return [100 * (1 - m[f"{group}.{species}.mae.h{h}"] / m[f"{group}.{species}.mae_ref_gbt.h{h}"])
                for h in LEADS]
    return [m.get(f"{group}.{species}.{key}.h{h}", float("nan")) for h in LEADS]


def table(rows: dict[str, dict[str, float]], species: str) -> str:
    """Markdown: one row per model and the mean row; each cell '24 / 48 / 72'."""
    head = f"| {species} | " + " | ".join(c[2] for c in COLUMNS) + " |"
    lines = [head, "|---" * (len(COLUMNS) + 1) + "|"]
    cols = {name: [values(m, g, k, species) for g, k, _ in COLUMNS] for name, m in rows.items()}
    mean = [[statistics.mean(c[i][j] for c in cols.values()) for j in range(len(LEADS))]
            for i in range(len(COLUMNS))]
    for name, cs in [*cols.items(), (f"mean of {len(cols)}", mean)]:
        cells = [" / ".join(_fmt(v, k) for v in c) for c, (_, k, _) in zip(cs, COLUMNS)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(v: float, key: str) -> str:
    return f"{v:.3f}" if key.startswith("coverage") else f"{v:.1f}" if key in ("margin", "simple") else f"{v:.2f}"


def main(argv: list[str] | None = None) -> str:
    import mlflow

    from training.tracking import tracking_uri

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", required=True, help="registered versions, comma-separated (e.g. 1,2,3)")
    ap.add_argument("--from", dest="start", required=True, help="start of the evaluations' --from (e.g. 2014-03)")
    ap.add_argument("--every", default="6h", help="the evaluations' --every")
    ap.add_argument("--rolling-bands", type=float, default=0.0, help="the evaluations' --rolling-bands (0: off)")
    ap.add_argument("--tracking-uri", default=None)
    a = ap.parse_args(argv)
    mlflow.set_tracking_uri(tracking_uri(a.tracking_uri))
    client = mlflow.tracking.MlflowClient()
    exp = client.get_experiment_by_name("aqcast-evaluate")
    if exp is None:
        raise SystemExit("no aqcast-evaluate experiment in this tracking store")
    rows = {f"/{v}": evaluation(client, exp.experiment_id, v, a.start, a.every, a.rolling_bands)
            for v in a.models.split(",")}
    out = "\n\n".join(table(rows, sp) for sp in ("pm25", "o3"))
    print(out)
    return out


if __name__ == "__main__":
    main()
