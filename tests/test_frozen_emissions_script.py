"""docs/scorecard/frozen_emissions.py: the MEIC totals without their year-to-year trend (thirty-fourth round)."""

import numpy as np
import pandas as pd
import pytest
from conftest import load_script


def _totals() -> pd.DataFrame:
    return pd.DataFrame([{"species": sp, "year": yr, "sector": sec, "emission_tg": (1 + k) * (2016 - yr) * m}
                         for m, sp in ((1.0, "NOx"), (3.0, "SO2")) for yr in (2013, 2014, 2015)
                         for k, sec in enumerate(("Power", "Industry"))])


def test_every_year_gets_the_mean_of_the_chosen_years_per_species_and_sector():
    df = _totals()
    out = load_script("frozen_emissions").frozen(df, [2013, 2014])
    assert list(out.columns) == list(df.columns) and len(out) == len(df)
    assert (out[["species", "year", "sector"]] == df[["species", "year", "sector"]]).all().all()
    # NOx Power: 3 (2013) and 2 (2014) -> 2.5 in every year; SO2 Industry: 2 * 3 * (3, 2) -> 15
    nox = out[(out["species"] == "NOx") & (out["sector"] == "Power")]["emission_tg"].to_numpy()
    so2 = out[(out["species"] == "SO2") & (out["sector"] == "Industry")]["emission_tg"].to_numpy()
    np.testing.assert_allclose(nox, 2.5)
    np.testing.assert_allclose(so2, 15.0)
    assert df.groupby("year")["emission_tg"].sum().nunique() == 3  # the input had a trend, untouched


def test_years_the_file_lacks_are_an_error():
    with pytest.raises(SystemExit, match="no rows for years"):
        load_script("frozen_emissions").frozen(_totals(), [2010])
