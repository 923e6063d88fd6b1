"""Emission totals with the year-to-year trend taken out, to ask what the trend tells a trained model.

    python docs/scorecard/frozen_emissions.py ../shared/data/emissions/meic_china_sector_totals_2010_2017.csv \
        /tmp/frz/emissions/meic_china_sector_totals_2010_2017.csv --years 2013,2014

Writes the MEIC csv with every year's `emission_tg` replaced by the mean of `--years` for its species and sector
(the training years of `configs/beijing.yaml`), so a store built from it (`aqcast features build
--emission-totals OUT`) keeps the emission channels' profiles (hour, weekday, month) and loses only the annual
totals. `aqcast evaluate --store` on that store then scores the same weights without the trend
(docs/experiments-beijing-23.md, M57).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def frozen(df: pd.DataFrame, years: list[int]) -> pd.DataFrame:
    """Every row's emission_tg -> the mean over `years` of its (species, sector); an error if one lacks them."""
    ref = df[df["year"].isin(years)].groupby(["species", "sector"])["emission_tg"].mean()
    keys = pd.MultiIndex.from_frame(df[["species", "sector"]])
    missing = sorted({k for k in keys if k not in ref.index})
    if missing:
        raise SystemExit(f"no rows for years {years} of {missing[:5]}")
    out = df.copy()
    out["emission_tg"] = ref.reindex(keys).to_numpy()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--years", default="2013,2014")
    a = ap.parse_args()
    years = [int(y) for y in a.years.split(",")]
    out = frozen(pd.read_csv(a.src), years)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(a.out, index=False)
    print(f"wrote {len(out)} rows to {a.out}: every year at the {'/'.join(map(str, years))} mean")


if __name__ == "__main__":
    main()
