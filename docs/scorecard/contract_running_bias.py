"""A running correction of each point's P50 in backtest-contract CSVs: does it mend a model's bias at a station
unlike its training stations? (Diagnostic, not a forecast; docs/experiments-beijing-22.md.)

At each init t, the P50 of every lead at a point is shifted in log1p space by `shrink` x the mean log1p error of
that point's forecasts (all leads) whose valid time lies in (t - days, t], i.e. verified by t (causal; at least 24
of them, else no shift). Round nine's version on the store (`running_bias.py`) shifts per lead at the input
stations; this one reads nothing but the contract's CSV and the raw station files, so it scores any point.

    python docs/scorecard/contract_running_bias.py ../shared/data/beijing fc.csv [more.csv ...] [--days 30]
        [--shrink 0.5] [--points Changping,Dingling,Huairou]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
import score_contract


def corrected(m: pd.DataFrame, days: float = 30.0, shrink: float = 0.5, min_n: int = 24) -> pd.Series:
    """|corrected P50 - obs| for the rows of `score_contract.matched`."""
    return (shifted_p50(m, days, shrink, min_n) - m["obs"]).abs()


def shifted_p50(m: pd.DataFrame, days: float = 30.0, shrink: float = 0.5, min_n: int = 24) -> pd.Series:
    """The P50 of each row shifted by the running correction at its init (errors verified by the init only)."""
    le = np.log1p(m["obs"].clip(lower=0)) - np.log1p(m["p50"].clip(lower=0))
    shift = pd.Series(0.0, index=m.index)
    window = np.timedelta64(int(days * 24), "h")
    for _, g in m.groupby(["point_id", "species"]):
        valid, err = g["valid"].to_numpy(), le.loc[g.index].to_numpy()
        for t in np.unique(g["init"].to_numpy()):
            sel = (valid <= t) & (valid > t - window)
            if sel.sum() >= min_n:
                shift.loc[g.index[g["init"].to_numpy() == t]] = shrink * err[sel].mean()
    return np.expm1(np.log1p(m["p50"].clip(lower=0)) + shift)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data_dir")
    ap.add_argument("forecasts", nargs="+")
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--shrink", type=float, default=0.5)
    ap.add_argument("--points", default="Changping,Dingling,Huairou", help="points shown apart; the rest pooled")
    a = ap.parse_args()
    apart = a.points.split(",")
    print("| forecasts | where | species | MAE 24 / 48 / 72 h | corrected |\n|---|---|---|---|---|")
    for path in a.forecasts:
        m = score_contract.matched(path, a.data_dir, [])
        m["errc"] = corrected(m, a.days, a.shrink)
        m = m[m["lead_hours"].isin([24, 48, 72])]
        m["where"] = m["point_id"].where(m["point_id"].isin(apart), "the others")
        t = m.groupby(["where", "species", "lead_hours"])[["err", "errc"]].mean().round(1)
        for (where, sp), g in t.groupby(level=[0, 1]):
            cols = [" / ".join(str(v) for v in g[c]) for c in ("err", "errc")]
            print(f"| {Path(path).name} | {where} | {sp} | {cols[0]} | {cols[1]} |")


if __name__ == "__main__":
    main()
