"""Skill by issue hour: models scored once a day at each local issue hour, the trees beside them.

    AQCAST_HOME=/tmp/bj python docs/scorecard/issue_hours.py --models 1,2,3 --store /tmp/bj/store-f14.zarr \
        --out /tmp/bj/ih

For every model version and local issue hour (00, 06, 12, 18 by default) this runs `aqcast evaluate --every 24h
--no-mlflow` over the validation year (2015-03-01 .. 2016-02-29, Beijing time) into OUT/ih-<version>-<HH>.md,
unless that scorecard is already there, then reads back the summary rows and prints, per species and issue hour,
the mean over the models of the deep model's MAE at the input stations, the trees' MAE on the same samples, the
margin below the trees (1 - deep / trees) and the deep model's MAE at the held-out stations, at 24 / 48 / 72 h,
then each model's P50 bias at 24 h by issue hour (= valid hour).
The four hours together are the `--every 6h` scorecard's inits. A diagnostic, not a forecast.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from training.scorecard import SPECIES


def summary(path: Path) -> dict[tuple[str, str], dict[str, list[float]]]:
    """{(group, forecast): {species: [MAE at 24, 48, 72 h]}} from a scorecard's summary table."""
    out: dict[tuple[str, str], dict[str, list[float]]] = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 8 and cells[1] in ("deep model", "gbt"):
            try:
                vals = [float(c) for c in cells[2:]]
            except ValueError:
                continue
            out[(cells[0], cells[1])] = {"pm25": vals[:3], "o3": vals[3:]}
    return out


def bias_24h(path: Path) -> dict[str, float]:
    """{species: mean error (forecast - observed) of the P50 at the input stations at 24 h} from the lead tables."""
    out: dict[str, float] = {}
    species, col = None, None
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            species = next((sp for sp in SPECIES if line == f"## train_stations — {sp}"), None)
            col = None
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if species and cells[0] == "lead h":
            col = cells.index("bias")
        elif species and col is not None and cells[0] == "24":
            out[species] = float(cells[col])
    return out


def scorecard(version: str, hour: int, args: argparse.Namespace) -> Path:
    """OUT/ih-<version>-<HH>.md, evaluated now unless it exists."""
    name = f"ih-{version}-{hour:02d}"
    path = Path(args.out) / f"{name}.md"
    if not path.exists():
        cmd = [str(Path(sys.executable).with_name("aqcast")), "evaluate", "--model", f"models:/aqcast/{version}",
               "--data", args.data, "--store", args.store, "--from", f"2015-03-01T{hour:02d}:00+08:00",
               "--to", "2016-02-29T23:00+08:00", "--every", "24h", "--no-mlflow", "--out", args.out, "--name", name]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return path


def seed_mean(cards: list[dict[tuple[str, str], dict[str, list[float]]]], group: str, forecast: str,
              species: str) -> list[float]:
    """The mean over the models' scorecards of one summary row's MAE at 24 / 48 / 72 h."""
    return [statistics.fmean(c[(group, forecast)][species][i] for c in cards) for i in range(3)]


def fmt(xs: list[float], spec: str = ".2f") -> str:
    return " / ".join(f"{x:{spec}}" for x in xs)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", required=True, help="comma-separated registered versions, e.g. 1,2,3")
    p.add_argument("--store", required=True)
    p.add_argument("--data", default="../shared/data/beijing")
    p.add_argument("--out", required=True, help="directory for the scorecards (reused when present)")
    p.add_argument("--hours", default="0,6,12,18", help="local issue hours")
    args = p.parse_args(argv)
    versions = args.models.split(",")
    hours = [int(h) for h in args.hours.split(",")]
    paths = {(v, h): scorecard(v, h, args) for v in versions for h in hours}
    cards = {k: summary(p) for k, p in paths.items()}
    for sp in SPECIES:
        print(f"\n| {sp}, issue hour (local) | deep, input stations | trees | below trees % | deep, held out |")
        print("|---|---|---|---|---|")
        for h in hours:
            deep, trees, held = (seed_mean([cards[(v, h)] for v in versions], group, fc, sp) for group, fc in
                                 (("train_stations", "deep model"), ("train_stations", "gbt"),
                                  ("held_out_stations", "deep model")))
            margin = [100 * (1 - d / t) for d, t in zip(deep, trees)]
            print(f"| {h:02d}:00 | {fmt(deep)} | {fmt(trees)} | {fmt(margin, '.1f')} | {fmt(held)} |")
    print("\n| P50 bias at 24 h, input stations, per model | " + " | ".join(f"{h:02d}:00" for h in hours) + " |")
    print("|---|" + "---|" * len(hours))
    for sp in SPECIES:
        print(f"| {sp} | " + " | ".join(fmt([bias_24h(paths[(v, h)])[sp] for v in versions], ".1f") for h in hours) + " |")

if __name__ == "__main__":
    main()
