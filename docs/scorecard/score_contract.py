"""Score a backtest-contract output (forecasts.csv) against the observations of a data directory, by the
contract's own columns only: MAE of p50 at chosen leads and the P10-P90 coverage range over the 72 leads, per
species, for the points that are stations of the directory (the points named with --held-out, e.g. stations
whose files were left out of the backtest's DIR, are reported apart); `--by-month`: coverage and MAE over all
leads per month of the init instead; `--by-point`: each point apart, beside persistence (the point's observation
at the init hour) on the same samples. A check from outside the model: it reads
nothing but the CSV the contract writes and the raw station files. Given several forecast CSVs (the same
rows from different models), it scores their member mean, quantile by quantile in log1p space.

    python docs/scorecard/score_contract.py /tmp/forecasts.csv [more.csv ...] ../shared/data/beijing [--held-out A,B]
        [--by-month | --by-point]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from features.errors import DataError
from features.readers.stations import read_stations

KEY = ["init_time", "lead_hours", "point_id", "species"]


def member_mean(paths: list[str]) -> pd.DataFrame:
    """The contract rows of one CSV, or the log1p-space mean of each quantile over several (same rows)."""
    frames = [pd.read_csv(p).set_index(KEY).sort_index() for p in paths]
    if any(not f.index.equals(frames[0].index) for f in frames[1:]):
        raise ValueError("the forecast CSVs do not hold the same (init_time, lead_hours, point_id, species) rows")
    q = ["p10", "p50", "p90"]
    mean = np.expm1(sum(np.log1p(f[q].clip(lower=0)) for f in frames) / len(frames))
    return mean.reset_index()


def matched(forecasts: str | list[str], data_dir: str, held_out: list[str]) -> pd.DataFrame:
    """The forecast rows at the data's stations with their observation: error of p50, inside the band, group."""
    fc = member_mean([forecasts] if isinstance(forecasts, str) else list(forecasts))
    init = pd.to_datetime(fc["init_time"], utc=True).dt.tz_localize(None)
    fc["valid"] = init + pd.to_timedelta(fc["lead_hours"], unit="h")
    fc["init"] = init
    ds = read_stations(data_dir)
    obs = (ds[["pm25", "o3"]].to_dataframe().reset_index()
           .melt(id_vars=["station", "time"], value_vars=["pm25", "o3"], var_name="species", value_name="obs"))
    m = fc.merge(obs, left_on=["point_id", "valid", "species"], right_on=["station", "time", "species"])
    m = m[np.isfinite(m["obs"])]
    at_init = obs.rename(columns={"obs": "persistence", "time": "init"})
    m = m.merge(at_init, on=["station", "init", "species"], how="left")
    m["group"] = np.where(m["point_id"].isin(held_out), "held-out points", "stations in DIR")
    m["err"] = (m["p50"] - m["obs"]).abs()
    m["inside"] = (m["obs"] >= m["p10"]) & (m["obs"] <= m["p90"])
    m["init_local"] = m["init_time"].str[:7]  # YYYY-MM of the init as written (local)
    return m


def by_month(m: pd.DataFrame) -> pd.DataFrame:
    """P10-P90 coverage and p50 MAE over all leads per month of the init (as written, local) and species."""
    g = m.groupby(["group", "species", "init_local"])
    return (pd.DataFrame({"n": g.size(), "coverage": g["inside"].mean().round(3), "MAE": g["err"].mean().round(1)})
            .reset_index().rename(columns={"init_local": "month"}))


def by_point(m: pd.DataFrame, leads: tuple[int, ...] = (24, 48, 72)) -> pd.DataFrame:
    """p50 MAE at `leads` per point and species beside persistence, both on the samples where the point was
    observed at the init hour and the valid hour."""
    m = m[np.isfinite(m["persistence"])]
    rows = []
    for (point, sp), g in m.groupby(["point_id", "species"]):
        by_lead = g.groupby("lead_hours")
        mae, pers = by_lead["err"].mean(), (g["persistence"] - g["obs"]).abs().groupby(g["lead_hours"]).mean()
        rows.append({"point": point, "species": sp, "n per lead": int(by_lead.size().median()),
                     **{f"MAE {h} h": round(float(mae.get(h, np.nan)), 1) for h in leads},
                     **{f"persistence {h} h": round(float(pers.get(h, np.nan)), 1) for h in leads}})
    return pd.DataFrame(rows)


def score(forecasts: str | list[str], data_dir: str, held_out: list[str],
          leads: tuple[int, ...] = (24, 48, 72)) -> pd.DataFrame:
    m = matched(forecasts, data_dir, held_out)
    rows = []
    for (group, sp), g in m.groupby(["group", "species"]):
        by_lead = g.groupby("lead_hours")
        mae, cov = by_lead["err"].mean(), by_lead["inside"].mean()
        rows.append({"group": group, "species": sp, "n per lead": int(by_lead.size().median()),
                     **{f"MAE {h} h": round(float(mae.get(h, np.nan)), 1) for h in leads},
                     "P10-P90 coverage": f"{cov.min():.2f}-{cov.max():.2f}"})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("forecasts", nargs="+", help="contract CSV(s), then the data directory")
    ap.add_argument("--held-out", default="", help="comma-separated point ids never used as model inputs")
    how = ap.add_mutually_exclusive_group()
    how.add_argument("--by-month", action="store_true", help="coverage and MAE (all leads) per month of the init")
    how.add_argument("--by-point", action="store_true", help="MAE per point beside persistence at the point")
    a = ap.parse_args()
    *files, data_dir = a.forecasts
    if not files:
        ap.error("give at least one forecast CSV and the data directory")
    try:
        held = [s for s in a.held_out.split(",") if s]
        if a.by_month or a.by_point:
            t = (by_month if a.by_month else by_point)(matched(files, data_dir, held))
        else:
            t = score(files, data_dir, held)
    except (DataError, ValueError, FileNotFoundError) as e:  # one clear line, exit 2, as the CLI does
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print("| " + " | ".join(t.columns) + " |\n|" + "---|" * len(t.columns))
    for row in t.itertuples(index=False):
        print("| " + " | ".join(str(v) for v in row) + " |")


if __name__ == "__main__":
    main()
