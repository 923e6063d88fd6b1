"""Skill at points off the model's grid (decision M53): two feature stores from a station directory with some
stations left out, so that they lie off the grid the others span, and the table of contract forecasts there.

- store A: the kept stations on their own grid (the stations left out lie outside it);
- store B: the same stations on A's grid grown by whole cells over the left-out ones, as `aqcast backtest`
  grows it for points outside the model's grid (`training.domain.grid_for_points`, the 15-km margin).

A model trained on A forecasts the left-out points on the grown grid it never saw; one trained on B (same
stations, same config) has those cells in training. Train both with `aqcast train --store`, run `aqcast backtest`
with each on the full directory (the left-out stations' observations as inputs) and on the kept stations alone
(none there), then print the table. Twenty-second experiments page (docs/experiments-beijing-22.md).

    python docs/scorecard/off_grid.py stores ../shared/data/beijing /tmp/og --leave Changping,Dingling,Huairou
    python docs/scorecard/off_grid.py table ../shared/data/beijing --leave Changping,Dingling,Huairou \\
        A-full=/tmp/og/fc-a-full.csv B-full=/tmp/og/fc-b-full.csv ...   # `bias` instead of `table`: mean P50 error
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
import score_contract

from features.grid import Grid
from features.store_build import SIDE_FILES

TRAIN_PERIOD = ("2013-03-01T00:00+08:00", "2015-02-28T23:00+08:00")  # configs/beijing.yaml


def kept_dir(data_dir: Path, out: Path, leave: list[str]) -> pd.DataFrame:
    """`out/kept`: links to the station files of `data_dir` but those in `leave`; returns the left-out rows of
    stations.csv."""
    st = pd.read_csv(data_dir / "stations.csv")
    missing = sorted(set(leave) - set(st["station"]))
    if missing:
        raise SystemExit(f"error: {', '.join(missing)} not in {data_dir / 'stations.csv'}")
    kept = out / "kept"
    kept.mkdir(parents=True, exist_ok=True)
    for f in data_dir.glob("PRSA_Data_*.csv"):
        if f.name.split("_")[2] not in leave and not (kept / f.name).exists():
            (kept / f.name).symlink_to(f.resolve())
    st[~st["station"].isin(leave)].to_csv(kept / "stations.csv", index=False)
    return st[st["station"].isin(leave)]


def stores(data_dir: Path, out: Path, leave: list[str], train_period: tuple[str, str] = TRAIN_PERIOD) -> tuple:
    """Build `out/storeA.zarr` and `out/storeB.zarr` (see the module's docstring); returns their grids."""
    from features.store import build_store

    gone = kept_dir(data_dir, out, leave)
    side = {k: str(data_dir.parent / sub / name) for k, (sub, name) in SIDE_FILES.items()}
    a = build_store(out / "kept", out / "storeA.zarr", train_period=train_period, progress=False, **side)
    ga = Grid.from_json(a.attrs["grid"])
    km = ga.km_outside(gone["lon"].to_numpy(), gone["lat"].to_numpy())
    gb = ga.covering(gone["lon"].to_numpy(), gone["lat"].to_numpy(), margin_km=15.0)
    build_store(out / "kept", out / "storeB.zarr", grid=gb, train_period=train_period, progress=False, **side)
    print(f"A: {ga.ny} x {ga.nx} cells; B: {gb.ny} x {gb.nx}; km off A: "
          + ", ".join(f"{s} {k:.1f}" for s, k in zip(gone["station"], km, strict=True)))
    return ga, gb


def bias(data_dir: str, leave: list[str], runs: list[str]) -> pd.DataFrame:
    """Mean p50 - observation over the leads 24, 48 and 72 h at each left-out point and the kept points, per run."""
    out = {}
    for run in runs:
        tag, path = run.split("=", 1)
        m = score_contract.matched(path, data_dir, [])
        m = m[m["lead_hours"].isin([24, 48, 72])]
        where = m["point_id"].where(m["point_id"].isin(leave), "the others")
        out[tag] = (m["p50"] - m["obs"]).groupby([where.rename("where"), m["species"]]).mean().round(1)
    return pd.DataFrame(out).reset_index()


def table(data_dir: str, leave: list[str], runs: list[str]) -> pd.DataFrame:
    """MAE of p50 at 24 / 48 / 72 h per left-out point, the kept points' mean, and persistence, per run."""
    cols = [f"MAE {h} h" for h in (24, 48, 72)]
    out = {}
    for run in runs:
        tag, path = run.split("=", 1)
        t = score_contract.by_point(score_contract.matched(path, data_dir, []))
        t["where"] = t["point"].where(t["point"].isin(leave), "the others (mean)")
        out[tag] = t.groupby(["where", "species"])[cols].mean()
        pers = t.groupby(["where", "species"])[[c.replace("MAE", "persistence") for c in cols]].mean()
    frame = pd.DataFrame({tag: m.round(1).astype(str).agg(" / ".join, axis=1) for tag, m in out.items()})
    frame["persistence"] = pers.round(1).astype(str).agg(" / ".join, axis=1)
    return frame.reset_index()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["stores", "table", "bias"])
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("rest", nargs="+", help="stores: OUT; table: TAG=forecasts.csv ...")
    ap.add_argument("--leave", required=True, help="comma-separated stations to leave off the grid")
    a = ap.parse_args()
    leave = [s for s in a.leave.split(",") if s]
    if a.what == "stores":
        stores(a.data_dir, Path(a.rest[0]), leave)
        return
    bad = [r for r in a.rest if "=" not in r]
    if bad:
        ap.error(f"{a.what} takes TAG=forecasts.csv arguments, got {' '.join(bad)}")
    t = (table if a.what == "table" else bias)(str(a.data_dir), leave, a.rest)
    print("| " + " | ".join(t.columns) + " |\n|" + "---|" * len(t.columns))
    for row in t.itertuples(index=False):
        print("| " + " | ".join(str(v) for v in row) + " |")


if __name__ == "__main__":
    main()
