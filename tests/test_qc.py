"""Data-quality flags: each rule on synthetic series, values untouched, rates on real data."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from features.paths import shared_data_dir
from features.qc import IMPOSSIBLE, LONG_GAP, NEGATIVE, SPIKE, STUCK, flag, qc_summary


def make_ds(n: int = 240, seed: int = 0, **overrides: np.ndarray) -> xr.Dataset:
    """Two stations of smooth, plausible hourly data; `overrides` replace station 0 of a variable."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    base = {
        "pm25": 40 + 20 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 2, n),
        "pm10": 80 + 30 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 3, n),
        "o3": 60 + 40 * np.sin(2 * np.pi * (t - 6) / 24) + rng.normal(0, 3, n),
        "t2m": 10 + 5 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.3, n),
        "d2m": 0 + rng.normal(0, 0.3, n),
        "tp": np.zeros(n),
        "u10": rng.normal(0, 2, n),
    }
    data = {}
    for k, v in base.items():
        arr = np.stack([v, v + (0.0 if k == "tp" else 1.0)]).astype(np.float32)
        if k in overrides:
            arr[0] = overrides[k]
        data[k] = (("station", "time"), arr)
    time = pd.date_range("2020-01-01", periods=n, freq="h").to_numpy()
    return xr.Dataset(data, coords={"station": ["A", "B"], "time": time,
                                    "lon": ("station", [116.0, 116.1]), "lat": ("station", [40.0, 40.1])})


def test_output_layout_and_values_untouched():
    ds = make_ds()
    before = ds.copy(deep=True)
    fl = flag(ds)
    xr.testing.assert_identical(ds, before)
    assert set(fl.data_vars) == {f"qc_{v}" for v in ds.data_vars}
    for v in fl.data_vars:
        assert fl[v].dtype == np.uint8 and fl[v].dims == ("station", "time")
    assert "lon" in fl.coords and (fl["time"] == ds["time"]).all()


def test_clean_data_has_almost_no_flags():
    fl = flag(make_ds(n=24 * 30))
    total = sum(int((fl[v] != 0).sum()) for v in fl.data_vars)
    assert total <= 3


def test_stuck_values():
    ds = make_ds()
    pm = ds["pm25"].values[0].copy()
    pm[50:65] = 77.0  # 15 h identical
    pm[100:105] = 55.0  # 5 h: fine
    fl = flag(make_ds(pm25=pm))
    q = fl["qc_pm25"].values[0]
    assert (q[50:65] & STUCK).all() and not (q[100:105] & STUCK).any() and not (q[:50] & STUCK).any()
    fl6 = flag(make_ds(pm25=pm), stuck_hours=5)
    assert (fl6["qc_pm25"].values[0, 100:105] & STUCK).all()


def test_stuck_ignores_zero_rain_and_detection_limit():
    pm = make_ds()["pm25"].values[0].copy()
    pm[10:40] = 2.0  # at the detection limit for 30 h: clean air, not a fault
    fl = flag(make_ds(pm25=pm))
    assert not (fl["qc_pm25"].values & STUCK).any()
    assert not (fl["qc_tp"].values & STUCK).any()  # zero rain for 10 days


def test_spike_single_point():
    pm = make_ds()["pm25"].values[0].copy()
    pm[120] = 900.0
    pm[60] = 0.2  # a drop-out spike
    fl = flag(make_ds(pm25=pm))
    q = fl["qc_pm25"].values[0]
    assert q[120] & SPIKE and q[60] & SPIKE
    assert int((q & SPIKE).astype(bool).sum()) == 2


def test_gradual_episode_is_not_a_spike():
    n = 240
    pm = make_ds(n)["pm25"].values[0].copy()
    pm[100:160] += np.concatenate([np.linspace(0, 300, 30), np.linspace(300, 0, 30)])  # haze episode
    fl = flag(make_ds(n, pm25=pm))
    assert not (fl["qc_pm25"].values & SPIKE).any()


def test_negative_and_impossible():
    ds = make_ds()
    pm25 = ds["pm25"].values[0].copy()
    pm10 = ds["pm10"].values[0].copy()
    o3 = ds["o3"].values[0].copy()
    pm25[5] = -3.0
    pm25[30], pm10[30] = 300.0, 100.0  # PM2.5 > PM10 well beyond tolerance
    pm25[31], pm10[31] = 105.0, 100.0  # within tolerance
    o3[70] = 1200.0
    t = ds["t2m"].values[0].copy()
    t[90] = -5.0  # dew point 0 > T -5
    fl = flag(make_ds(pm25=pm25, pm10=pm10, o3=o3, t2m=t))
    assert fl["qc_pm25"].values[0, 5] & NEGATIVE
    assert fl["qc_pm25"].values[0, 30] & IMPOSSIBLE and fl["qc_pm10"].values[0, 30] & IMPOSSIBLE
    assert not fl["qc_pm25"].values[0, 31] & IMPOSSIBLE
    assert fl["qc_o3"].values[0, 70] & IMPOSSIBLE
    assert fl["qc_d2m"].values[0, 90] & IMPOSSIBLE
    assert not (fl["qc_u10"].values & NEGATIVE).any()  # wind components may be negative


def test_long_gaps():
    pm = make_ds()["pm25"].values[0].copy()
    pm[20:50] = np.nan  # 30 h gap
    pm[80:90] = np.nan  # 10 h gap
    fl = flag(make_ds(pm25=pm))
    q = fl["qc_pm25"].values[0]
    assert (q[20:50] & LONG_GAP).all() and not (q[80:90] & LONG_GAP).any() and not q[19] & LONG_GAP
    assert (flag(make_ds(pm25=pm), gap_hours=10)["qc_pm25"].values[0, 80:90] & LONG_GAP).all()


def test_summary_counts():
    pm = make_ds()["pm25"].values[0].copy()
    pm[20:50] = np.nan
    pm[5] = -1.0
    fl = flag(make_ds(pm25=pm))
    s = qc_summary(fl)
    assert list(s.index) == ["A", "B"]
    assert {"STUCK", "SPIKE", "NEGATIVE", "IMPOSSIBLE", "LONG_GAP", "n_values"} <= set(s.columns)
    assert s.loc["A", "LONG_GAP"] == 30 and s.loc["A", "NEGATIVE"] >= 1 and s.loc["B", "LONG_GAP"] == 0
    by_var = qc_summary(fl, by_variable=True)
    assert by_var.loc[("A", "pm25"), "LONG_GAP"] == 30


@pytest.mark.real_data
def test_real_beijing_rates_are_sensible():
    d = shared_data_dir() / "beijing"
    if not (d / "stations.csv").is_file():
        pytest.skip(f"real data not found at {d}")
    from features.readers.stations import read_stations

    ds = read_stations(d)
    fl = flag(ds)
    s = qc_summary(fl, by_variable=True).groupby("variable").sum()
    n_obs = {v: int(ds[v].notnull().sum()) for v in ds.data_vars}
    for var, row in s.iterrows():
        for col in ("STUCK", "SPIKE", "NEGATIVE", "IMPOSSIBLE"):
            assert row[col] / n_obs[var] < 0.03, (var, col, row[col] / n_obs[var])
    assert s.loc["pm25", "SPIKE"] > 0 and s.loc["pm25", "IMPOSSIBLE"] > 0  # real data has some
    assert s.loc["co", "LONG_GAP"] > 0
