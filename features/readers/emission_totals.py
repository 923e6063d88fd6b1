"""National sector emission totals (MEIC csv): sector shares per species and year.

Public API:
    read_emission_totals(path) -> pandas.DataFrame
        columns species, year (int), sector, emission_tg (float), share (sector / species-year total)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from features.errors import DataError, MissingInputError, Problem
from features.readers.stations import _decode, _numeric, _Problems, _read_table

REQUIRED = ["species", "year", "sector", "emission_tg"]


def read_emission_totals(path: str | Path) -> pd.DataFrame:
    """Read `species, year, sector, emission_tg` rows; all problems (row, column) reported together."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(Problem("emission totals csv not found", file=str(path)))
    probs = _Problems(path.name)
    text = _decode(path.read_bytes(), probs)
    df = _read_table(text, REQUIRED, probs) if text is not None else None
    if df is None:
        raise DataError(probs.final())
    for c in ("species", "sector"):
        df[c] = df[c].str.strip()
        for r in df.loc[df[c].isna() | (df[c] == ""), "_row"]:
            probs.add(f"{c} is empty", row=int(r), column=c)
    year = _numeric(df, "year", probs)
    tg = _numeric(df, "emission_tg", probs)
    rows = df["_row"].to_numpy()
    for r in rows[np.isnan(year) & df["year"].isna().to_numpy()]:
        probs.add("year is missing", row=int(r), column="year")
    bad_year = ~np.isnan(year) & ((year != np.round(year)) | (year < 1900) | (year > 2100))
    for r, y in zip(rows[bad_year], year[bad_year]):
        probs.add(f"{y:g} is not a valid year", row=int(r), column="year")
    for r, v in zip(rows[tg < 0], tg[tg < 0]):
        probs.add(f"emission {v:g} Tg is negative", row=int(r), column="emission_tg")
    df["year"], df["emission_tg"] = year, tg
    dup = df.duplicated(["species", "year", "sector"], keep="first").to_numpy()
    for r, s, y, sec in zip(rows[dup], df["species"][dup], year[dup], df["sector"][dup]):
        probs.add(f"duplicate entry for {s} {y:g} {sec}", row=int(r))
    if probs.final():
        raise DataError(probs.final())
    out = df[REQUIRED].copy()
    out["year"] = out["year"].astype(int)
    total = out.groupby(["species", "year"])["emission_tg"].transform("sum")
    out["share"] = np.where(total > 0, out["emission_tg"] / total.where(total > 0, 1.0), np.nan)
    return out.sort_values(["species", "year", "sector"]).reset_index(drop=True)
