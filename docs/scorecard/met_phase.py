"""The phase of the weather columns' day, month by month, against the first year's same calendar month.

    python docs/scorecard/met_phase.py --data ../shared/data/beijing

For each weather column (TEMP, PRES, DEWP, WSPM) and each month of the station CSVs, the mean diurnal cycle over
all stations is compared with the same calendar month of the first twelve months, and the shift k (hours,
-4..4) that best correlates them is printed: +1 means the month's cycle runs one hour later. Ozone is printed
beside them as the pollutant control (its day is set by the sun). Then T(12:00) - T(18:00) in local time by
month, and per station and year: a later-running temperature day turns it negative. A diagnostic of the data, not of a model;
the feature store's own check and realignment is `features/clock.py` (decision M50; `aqcast features info` shows it).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ("TEMP", "PRES", "DEWP", "WSPM", "O3")


def read(data_dir: str | Path) -> pd.DataFrame:
    """All station CSVs of a UCI-layout directory, one frame (year, month, day, hour are local time)."""
    files = sorted(Path(data_dir).glob("PRSA_*.csv"))
    if not files:
        raise SystemExit(f"no PRSA_*.csv station files in {data_dir}")
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True)


def cycles(df: pd.DataFrame, column: str) -> pd.DataFrame:
    """Mean diurnal cycle [(year, month) x hour 0..23] of one column over all stations."""
    return df.pivot_table(index=["year", "month"], columns="hour", values=column, aggfunc="mean")


def best_shifts(df: pd.DataFrame, column: str, max_shift: int = 4) -> pd.Series:
    """Per (year, month): the shift k in hours whose cycle, moved k hours earlier, best correlates with the same
    calendar month in the first twelve months of the data."""
    cyc = cycles(df, column)
    ref = cyc.iloc[:12].droplevel("year")
    out = {}
    for (year, month), row in cyc.iterrows():
        x, r = row.to_numpy(float), ref.loc[month].to_numpy(float)
        out[(year, month)] = max(range(-max_shift, max_shift + 1),
                                 key=lambda k: np.corrcoef(np.roll(x, -k), r)[0, 1])
    return pd.Series(out, name=column)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/beijing")
    args = p.parse_args(argv)
    df = read(args.data)
    shifts = pd.concat([best_shifts(df, c) for c in COLUMNS if c in df], axis=1)
    print("| month | " + " | ".join(shifts.columns) + " |")
    print("|---|" + "---|" * len(shifts.columns))
    for (year, month), row in shifts.iterrows():
        print(f"| {year}-{month:02d} | " + " | ".join(f"{int(v):+d}" for v in row) + " |")
    temp = cycles(df, "TEMP")
    noon = (temp[12] - temp[18]).unstack("month")
    print("\n| T(12:00) - T(18:00), °C | " + " | ".join(str(m) for m in noon.columns) + " |")
    print("|---|" + "---|" * len(noon.columns))
    for year, row in noon.iterrows():
        print(f"| {year} | " + " | ".join(f"{v:.1f}" for v in row) + " |")
    per = df.pivot_table(index=["station", "year"], columns="hour", values="TEMP", aggfunc="mean")
    by_station = (per[12] - per[18]).unstack("year")
    print("\n| T(12:00) - T(18:00), °C | " + " | ".join(str(y) for y in by_station.columns) + " |")
    print("|---|" + "---|" * len(by_station.columns))
    for station, row in by_station.iterrows():
        print(f"| {station} | " + " | ".join(f"{v:.1f}" for v in row) + " |")


if __name__ == "__main__":
    main()
