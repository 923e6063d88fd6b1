"""Build a stand-in for the withheld evaluation data, to dry-run the backtest contract on it.

    python docs/scorecard/later_year_dir.py ../shared/data/beijing /tmp/later

The withheld remainder of UCI 501 runs to 2017-02-28 and has two more stations (Shunyi, Tiantan). This writes
a directory in exactly that layout: every station's file extended by a fake year 2016-03-01 .. 2017-02-28
(its own 2014-03 .. 2015-02 rows, dates moved on two years), plus Shunyi and Tiantan at their real coordinates
(copies of Huairou and Dongsi, pollutants scaled by 1.05 and 0.95). The numbers forecast on it mean nothing
(the fake year is training data); it checks that the contract command runs on 12 stations and 4 years, and
how long it takes and how much memory it needs.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

POLLUTANTS = ["PM2.5", "PM10", "SO2", "NO2", "CO", "O3"]
NEW = {"Shunyi": ("Huairou", "1008A", "顺义新城", 116.655, 40.127, 1.05),
       "Tiantan": ("Dongsi", "1004A", "天坛", 116.407, 39.886, 0.95)}


def later_year(df: pd.DataFrame) -> pd.DataFrame:
    """The 2014-03 .. 2015-02 rows moved on to 2016-03 .. 2017-02 (both spans have 365 days)."""
    t = pd.to_datetime(df[["year", "month", "day", "hour"]])
    year = df[(t >= "2014-03-01") & (t < "2015-03-01")].copy()
    year["year"] += 2
    return year


def main(src: str, out: str) -> None:
    src_dir, out_dir = Path(src), Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = {}
    for f in sorted(src_dir.glob("PRSA_Data_*.csv")):
        df = pd.read_csv(f)
        frames[str(df["station"].iloc[0])] = pd.concat([df, later_year(df)], ignore_index=True)
    stations = pd.read_csv(src_dir / "stations.csv")
    for name, (copy_of, code, zh, lon, lat, k) in NEW.items():
        df = frames[copy_of].copy()
        df[POLLUTANTS] = (df[POLLUTANTS] * k).round(1)
        df["station"] = name
        frames[name] = df
        stations.loc[len(stations)] = [name, code, zh, lon, lat]
    for name, df in frames.items():
        df["No"] = range(1, len(df) + 1)
        df.to_csv(out_dir / f"PRSA_Data_{name}_20130301-20170228.csv", index=False)
    stations.to_csv(out_dir / "stations.csv", index=False)
    print(f"{len(frames)} stations, {len(frames[name])} hours each -> {out_dir}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
