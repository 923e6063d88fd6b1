"""The service's rolled P10-P90 band: the backtest's band for the same init, P50 untouched, causal, refreshed by
posted observations."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_export import TINY_CFG, tiny_artifact

from features.grid import Grid

INIT = np.datetime64("2021-01-10T16:00", "ns")  # 2021-01-11T00:00+08:00, the contract's issue hour


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_store, tiny_store_path):
    from serving.forecaster import Forecaster

    art = tiny_artifact(tmp_path_factory, tiny_store, tiny_store_path)
    return art, (Forecaster(art, tiny_store_path, threads=1, rolling_bands=3),
                 Forecaster(art, tiny_store_path, threads=1))


def test_rolled_band_is_the_backtests_and_moves_only_station_cells(tmp_path, served, tiny_store):
    from models.artifact import ModelCard
    from training.backtest import run_backtest
    from training.bench import model_for_store

    art, (rolled, plain) = served
    _, a = rolled.forecast(INIT)
    _, b = plain.forecast(INIT)
    info = rolled.band_info[INIT]
    assert info["earlier_forecasts"] == 5 and info["verified_samples"]["pm25"] > 100  # (3 d + 72 h - 1 h) // 24 h
    assert info["factor"]["pm25"] != 1.0 and plain.band_info[INIT]["rolled_window_days"] == 0
    rows, cols = tiny_store["station_row"].values.astype(int), tiny_store["station_col"].values.astype(int)
    at = np.zeros(a.shape[-2:], bool)
    at[rows, cols] = True
    assert np.array_equal(a[:, :, 1], b[:, :, 1])                          # P50 never moves
    assert np.array_equal(a[..., ~at], b[..., ~at])                        # cells without a station: model's band
    assert not np.allclose(a[:, :, 2][..., at], b[:, :, 2][..., at], atol=0.05)
    assert (a[:, :, 0] <= a[:, :, 1]).all() and (a[:, :, 1] <= a[:, :, 2]).all() and (a >= 0).all()

    card = ModelCard.read(art)
    model, meta = model_for_store(tiny_store, TINY_CFG)
    meta |= {"history": card.history, "leads": card.leads}
    lon, lat = Grid.from_json(tiny_store.attrs["grid"]).rowcol_to_lonlat(rows[0], cols[0])
    pts = tmp_path / "points.csv"
    pts.write_text(f"point_id,lon,lat\nsite,{lon},{lat}\n")
    bt = run_backtest(model, meta, "", "2021-01-11T00:00+08:00", "2021-01-11T00:00+08:00", "24h", pts,
                      tmp_path / "fc.csv", store=tiny_store, rolling_bands=3)
    for k, sp in enumerate(card.species):
        got = bt[bt["species"] == sp].sort_values("lead_hours")
        for q, col in enumerate(("p10", "p50", "p90")):  # ONNX against torch, rounded to 0.01 in the CSV
            assert np.allclose(got[col], a[:, k, q, rows[0], cols[0]], atol=0.02), (sp, col)


def test_rolled_band_uses_no_observation_after_the_init_and_follows_posted_ones(served, tiny_store_path):
    from serving.forecaster import Forecaster

    art, (rolled, _) = served
    _, a = rolled.forecast(INIT)
    later = Forecaster(art, tiny_store_path, threads=1, rolling_bands=3)
    station = later.stations[0]
    after = [{"time": str(pd.Timestamp(INIT + np.timedelta64(h, "h")).tz_localize("UTC").isoformat()),
              "station": station, "pm25": 900.0, "o3": 500.0} for h in range(1, 30)]
    later.add_observations(after)                                          # values after the init only
    assert np.array_equal(later.forecast(INIT)[1], a)
    before = [{**r, "time": str(pd.Timestamp(INIT - np.timedelta64(h, "h")).tz_localize("UTC").isoformat())}
              for h, r in zip(range(30, 60), after)]                         # inside earlier forecasts' horizons
    later.add_observations(before)
    _, c = later.forecast(INIT)
    assert later.band_info[INIT]["factor"] != rolled.band_info[INIT]["factor"]
    assert not np.array_equal(c, a)
