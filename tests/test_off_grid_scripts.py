"""docs/scorecard/off_grid.py and contract_running_bias.py: the off-grid measurement's stores and the running
correction tried on contract CSVs (thirty-third round)."""

import json

import numpy as np
import pandas as pd
import xarray as xr
from conftest import load_script, write_uci_dir

STATIONS = {"Alpha": (116.30, 39.92), "Bravo": (116.45, 39.95), "Charlie": (116.35, 40.00),
            "North": (116.38, 40.30)}


def test_off_grid_stores_leave_the_station_off_a_and_on_the_grown_b(tmp_path):
    from features.grid import Grid

    d = write_uci_dir(tmp_path / "data", n_days=6, stations=STATIONS)
    ga, gb = load_script("off_grid").stores(d, tmp_path / "og", ["North"],
                                            train_period=("2021-01-01T00:00+08:00", "2021-01-04T23:00+08:00"))
    kept = tmp_path / "og" / "kept"
    assert sorted(p.name.split("_")[2] for p in kept.glob("PRSA_Data_*.csv")) == ["Alpha", "Bravo", "Charlie"]
    assert list(pd.read_csv(kept / "stations.csv")["station"]) == ["Alpha", "Bravo", "Charlie"]
    lon, lat = STATIONS["North"]
    assert ga.km_outside([lon], [lat])[0] > 10 and gb.contains([lon], [lat]).all()
    assert gb == ga.covering([lon], [lat], margin_km=15.0)  # the grid `aqcast backtest` grows for the point
    a, b = (xr.open_zarr(tmp_path / "og" / f"store{k}.zarr") for k in "AB")
    assert Grid.from_json(a.attrs["grid"]) == ga and Grid.from_json(b.attrs["grid"]) == gb
    for s in (a, b):
        assert sorted(s["station"].values) == ["Alpha", "Bravo", "Charlie"]
        assert json.loads(s.attrs.get("dropped_stations", "{}")) == {}


def _rows(log_err: float, n_inits: int = 6, leads: int = 48) -> pd.DataFrame:
    """Contract rows at one point, daily inits, obs 100 everywhere, P50 off by `log_err` in log1p space."""
    inits = pd.date_range("2021-01-01", periods=n_inits, freq="24h")
    m = pd.DataFrame([(t, lead) for t in inits for lead in range(1, leads + 1)], columns=["init", "lead_hours"])
    m["valid"] = m["init"] + pd.to_timedelta(m["lead_hours"], unit="h")
    m["point_id"], m["species"], m["obs"] = "P", "pm25", 100.0
    m["p50"] = np.expm1(np.log1p(100.0) - log_err)
    return m


def test_running_correction_halves_a_steady_log_bias_from_verified_forecasts_only():
    mod = load_script("contract_running_bias")
    m = _rows(0.2)
    err = mod.corrected(m, days=30, shrink=0.5)
    first = m["init"] == m["init"].min()
    raw = 100.0 - np.expm1(np.log1p(100.0) - 0.2)
    np.testing.assert_allclose(err[first], raw)  # nothing verified by the first init: no shift
    later = m["init"] >= m["init"].min() + pd.Timedelta(days=1)  # 24 verified leads by then
    np.testing.assert_allclose(err[later], 100.0 - np.expm1(np.log1p(100.0) - 0.1), rtol=1e-9)
    # observations valid after an init cannot move that init's P50; those before it do
    t2 = m["init"].min() + pd.Timedelta(days=2)
    at_t2 = m["init"] == t2
    m2 = m.copy()
    m2.loc[m["valid"] > t2, "obs"] = 5.0
    np.testing.assert_array_equal(mod.shifted_p50(m, 30, 0.5)[at_t2], mod.shifted_p50(m2, 30, 0.5)[at_t2])
    m3 = m.copy()
    m3.loc[m["valid"] <= t2, "obs"] = 5.0
    assert (mod.shifted_p50(m3, 30, 0.5)[at_t2] < mod.shifted_p50(m, 30, 0.5)[at_t2] - 1).all()
