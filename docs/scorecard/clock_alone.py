"""A later year alone: score a model on a directory that holds only the years after a cut, the weather clock
judged against the directory's own first year and against the model's training clock (decision M54).

    AQCAST_HOME=/tmp/bj python docs/scorecard/clock_alone.py --model models:/aqcast/15 \
        --data ../shared/data/beijing --cut 2015-03-01 --out /tmp/alone

Writes `OUT/data` (every station file from `--cut`, local time, on; stations.csv copied), then scores the model
there (daily inits at local midnight, `--from` / `--to`) twice: with the directory's own first year as the clock
reference, and with the reference of the record the model was trained on — its `store_options` when it has them
(models trained since M54), else the phases of the first twelve months of `--data` (the model's training record).
Prints MAE at 24 / 48 / 72 h per group and species, and the months each run realigned.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pandas as pd


def cut_directory(src: Path, out: Path, cut: str) -> Path:
    """Copy of a UCI-layout directory with the rows before `cut` (local time) dropped; returns it."""
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.glob("PRSA_Data_*.csv")):
        df = pd.read_csv(f)
        t = pd.to_datetime(df[["year", "month", "day", "hour"]])
        late = df[t >= pd.Timestamp(cut)].copy()
        late["No"] = range(1, len(late) + 1)
        late.to_csv(out / f.name, index=False)
    shutil.copy(src / "stations.csv", out / "stations.csv")
    return out


def training_reference(meta: dict, train_dir: Path) -> dict:
    """The model's clock reference: its store options, else the first twelve months of its training record."""
    from features.clock import reference_phases
    from features.readers.stations import read_stations

    ref = (meta.get("store_options") or {}).get("weather_clock_reference")
    if ref:
        return ref
    st = read_stations(train_dir)
    return reference_phases(st, str(st.attrs.get("source_utc_offset", "+08:00")))


def main(argv: list[str] | None = None) -> str:
    from training.domain import build_store_for
    from training.evaluate import evaluate_model, load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="the model's training data directory (the full record)")
    ap.add_argument("--cut", default="2015-03-01", help="local date: the directory keeps the rows from it on")
    ap.add_argument("--from", dest="t_from", default="2015-03-02T00:00+08:00")
    ap.add_argument("--to", dest="t_to", default="2016-02-26T00:00+08:00")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    out = Path(a.out)
    alone = cut_directory(Path(a.data), out / "data", a.cut)
    net, meta = load_model(a.model)
    rows = ["| clock reference | months realigned | group | PM2.5 24 / 48 / 72 h | O3 24 / 48 / 72 h |",
            "|---|---|---|---|---|"]
    for label, ref in (("the directory's own first year", None), ("the model's training record",
                                                                   training_reference(meta, Path(a.data)))):
        m = json.loads(json.dumps(meta))
        m.setdefault("store_options", {})["weather_clock_reference"] = ref
        ds = build_store_for(alone, m)
        moved = json.loads(ds.attrs["weather_clock"])["shifts_h"]
        rep = evaluate_model(net, m, ds, a.t_from, a.t_to, "24h", None, out / label.split()[1], gbt=False,
                             source=str(alone), name="scorecard")
        mae = rep["metrics"]
        for group in ("train_stations", "held_out_stations"):
            cells = [" / ".join(f"{mae.get(f'{group}.{sp}.mae.h{h}', float('nan')):.2f}" for h in (24, 48, 72))
                     for sp in ("pm25", "o3")]
            rows.append(f"| {label} | {len(moved)} | {group} | {cells[0]} | {cells[1]} |")
    text = "\n".join(rows)
    print(text)
    return text


if __name__ == "__main__":
    main()
