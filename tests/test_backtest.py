"""Backtest output contract on the tiny store: columns, formats, off-station points, out-of-grid error."""
import json
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from features.errors import DataError
from features.grid import Grid
from models import build_model
from models.config import ModelConfig
from training.backtest import COLUMNS, run_backtest

torch.set_num_threads(1)
SMALL = {"history": 6, "leads": 5, "hidden": 8, "decoder_hidden": 8, "dilations": [1, 2],
         "spread_sigmas": [1.0, 3.0], "spread_recent": 2, "spread_stride": 2, "history_forcing_stride": 2}


@pytest.fixture(scope="module")
def model_meta(tiny_store):
    from features.windows import WindowSampler

    s = WindowSampler(tiny_store, [tiny_store["time"].values[50]], history=6, leads=5)
    ch = {"obs": s.obs_vars, "forcing": s.forcing_vars, "static": s.static_vars}
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SMALL), ch, json.loads(tiny_store.attrs["norm_stats"])).eval()
    return model, {"grid": tiny_store.attrs["grid"], "channels": ch, "history": 6, "leads": 5}


def _points(tmp_path, tiny_store, extra=()):
    grid = Grid.from_json(tiny_store.attrs["grid"])
    lon_s, lat_s = float(tiny_store["station_lon"][0]), float(tiny_store["station_lat"][0])
    lon_c, lat_c = grid.rowcol_to_lonlat(0, 15)  # a corner cell, no station
    lines = ["point_id,lon,lat", f"alpha_site,{lon_s},{lat_s}", f"empty_corner,{lon_c},{lat_c}", *extra]
    p = tmp_path / "points.csv"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_backtest_contract(tmp_path, tiny_store, model_meta):
    model, meta = model_meta
    out = tmp_path / "fc.csv"
    run_backtest(model, meta, "unused", "2021-01-03T08:00+08:00", "2021-01-04T08:00+08:00", "12h",
                 _points(tmp_path, tiny_store), out, store=tiny_store)
    df = pd.read_csv(out, dtype={"point_id": str})
    assert list(df.columns) == COLUMNS
    assert len(df) == 3 * 5 * 2 * 2  # inits x leads x points x species
    assert set(df["init_time"]) == {"2021-01-03T08:00+08:00", "2021-01-03T20:00+08:00",
                                    "2021-01-04T08:00+08:00"}
    assert sorted(df["lead_hours"].unique()) == [1, 2, 3, 4, 5]
    assert set(df["species"]) == {"pm25", "o3"} and set(df["point_id"]) == {"alpha_site", "empty_corner"}
    assert (df["p10"] <= df["p50"]).all() and (df["p50"] <= df["p90"]).all() and (df["p10"] >= 0).all()
    assert np.isfinite(df[["p10", "p50", "p90"]].to_numpy()).all()


def test_backtest_met_error_changes_only_forecast_values(tmp_path, tiny_store, model_meta):
    model, meta = model_meta
    a = run_backtest(model, meta, "", "2021-01-03T00:00+08:00", "2021-01-03T00:00+08:00", "24h",
                     _points(tmp_path, tiny_store), tmp_path / "a.csv", store=tiny_store)
    b = run_backtest(model, meta, "", "2021-01-03T00:00+08:00", "2021-01-03T00:00+08:00", "24h",
                     _points(tmp_path, tiny_store), tmp_path / "b.csv", met_error=True, store=tiny_store)
    assert a[["init_time", "lead_hours", "point_id", "species"]].equals(b[["init_time", "lead_hours",
                                                                           "point_id", "species"]])
    assert not np.allclose(a["p50"], b["p50"])


def test_init_at_data_edge_is_padded_not_invented(tmp_path, tiny_store, model_meta):
    model, meta = model_meta
    last = pd.Timestamp(tiny_store["time"].values[-2]).tz_localize("UTC").isoformat()
    df = run_backtest(model, meta, "", last, last, "24h", _points(tmp_path, tiny_store), tmp_path / "e.csv",
                      store=tiny_store)
    assert len(df) == 5 * 2 * 2 and np.isfinite(df["p50"]).all()
    assert df["init_time"].iloc[0].endswith("+00:00")
    notes: list[str] = []
    run_backtest(model, meta, "", "2021-01-01T08:00+08:00", "2021-01-01T20:00+08:00", "6h",
                 _points(tmp_path, tiny_store), tmp_path / "f.csv", store=tiny_store, echo=notes.append)
    assert ("warning: 1 init(s) from 2021-01-01T08:00+08:00 have less than the model's 6-h history in the data "
            "(they start 2021-01-01T08:00+08:00)") in notes[0] and not any("past the data" in n for n in notes)
    notes.clear()
    run_backtest(model, meta, "", last, last, "24h", _points(tmp_path, tiny_store), tmp_path / "e.csv",
                 store=tiny_store, echo=notes.append)
    assert notes[0].startswith("warning: 1 init(s) from 2021-01-20T22:00+00:00 reach past the data's last hour")


def test_out_of_grid_point_is_a_clear_error(tmp_path, tiny_store, model_meta):
    model, meta = model_meta
    pts = _points(tmp_path, tiny_store, extra=["far_away,121.5,31.2"])
    with pytest.raises(DataError) as e:
        run_backtest(model, meta, "", "2021-01-03T00:00+08:00", "2021-01-03T00:00+08:00", "24h", pts,
                     tmp_path / "x.csv", store=tiny_store)
    msg = str(e.value)
    assert "far_away" in msg and "outside the model grid" in msg and "row 4" in msg


def test_points_file_saved_by_a_spreadsheet_reads(tmp_path):
    """A byte-order mark and spaces around the header names (as spreadsheets save CSV) are not errors."""
    from training.backtest import read_points

    p = tmp_path / "points.csv"
    p.write_bytes("point_id, lon ,lat\nTiantan,116.407,39.886\n007,116.655,40.127\n".encode("utf-8-sig"))
    ids, lon, lat, lines = read_points(p)
    assert ids == ["Tiantan", "007"] and lines == [2, 3]
    np.testing.assert_allclose(lon, [116.407, 116.655]) and np.testing.assert_allclose(lat, [39.886, 40.127])


def test_bad_points_and_times(tmp_path, tiny_store, model_meta):
    model, meta = model_meta
    bad = tmp_path / "bad.csv"
    bad.write_text("id,lon,lat\nA,116,40\n")
    with pytest.raises(DataError, match="point_id"):
        run_backtest(model, meta, "", "2021-01-03T00:00+08:00", "2021-01-03T00:00+08:00", "24h", bad,
                     tmp_path / "x.csv", store=tiny_store)
    with pytest.raises(DataError, match="--every"):
        run_backtest(model, meta, "", "2021-01-03T00:00+08:00", "2021-01-04T00:00+08:00", "daily",
                     _points(tmp_path, tiny_store), tmp_path / "x.csv", store=tiny_store)
    with pytest.raises(DataError, match="no data"):
        run_backtest(model, meta, "", "2030-01-03T00:00+08:00", "2030-01-04T00:00+08:00", "24h",
                     _points(tmp_path, tiny_store), tmp_path / "x.csv", store=tiny_store)


def test_evaluate_scorecard_train_and_held_out(tmp_path, tiny_store, model_meta):
    from training.evaluate import evaluate_model

    model, meta = model_meta
    said: list[str] = []
    rep = evaluate_model(model, meta, tiny_store, "2021-01-15T08:00+08:00", "2021-01-18T08:00+08:00", "12h",
                         held_out=["Delta"], out_dir=tmp_path, echo=said.append, batch_size=2)
    assert rep["held_out"] == ["Delta"] and "Delta" not in rep["inputs"]
    # no terminal under pytest: the forecast's progress comes as lines (a log or CI sees it move)
    assert said[0].startswith("forecasting 7 inits") and "forecast: 0/7 inits" in said
    assert sum(m.startswith("forecast: ") for m in said) == 4  # batches of 2: 0, 2, 4, 6
    # and after the forecast no silent minute: each later stage says what it is doing before it starts
    after = said[said.index("forecast: 6/7 inits") + 1:]
    assert after[0].startswith("references: persistence, climatology")
    assert any(m.startswith("GBT reference: predicting 7 inits") for m in after)
    assert after[-1].startswith("scoring by lead")
    res = rep["results"]
    assert set(res) == {"train_stations", "held_out_stations"}
    assert {"skill_vs_persistence", "skill_vs_climatology", "skill_vs_blend"} <= set(res["train_stations"])
    assert "skill_vs_idw_persistence" in res["held_out_stations"]
    md = rep["scorecard"].read_text()
    assert "## train_stations — pm25" in md and "## held_out_stations — o3" in md
    assert rep["png"].stat().st_size > 1000
    assert "train_stations.pm25.mae.mean" in rep["metrics"]


def test_evaluate_rolls_the_band_from_the_forecasts_before_from_as_a_longer_run_would(tiny_store, model_meta):
    from training.evaluate import (
        earlier_at_stations,
        forecast_at_stations,
        init_times,
        rescale_bands,
        station_split,
    )

    model, meta = model_meta
    inputs, _ = station_split(tiny_store, meta, ["Delta"])
    t0 = np.datetime64("2021-01-03T00:00", "ns")
    inits = init_times(t0, t0 + np.timedelta64(18, "h"), 6)
    before = earlier_at_stations(model, meta, tiny_store, inits[0], 6, 1, inputs)
    assert before[0].size == 4  # (24 h + 5 leads - 1) // 6 h
    longer = np.concatenate([before[0], inits])
    pred_l, obs_l, names = forecast_at_stations(model, meta, tiny_store, longer, inputs)
    verify = np.isin(names, inputs)
    pred, obs, _ = forecast_at_stations(model, meta, tiny_store, inits, inputs)
    rolled = rescale_bands(pred, obs, inits, verify, 1, before)
    np.testing.assert_allclose(rolled, rescale_bands(pred_l, obs_l, longer, verify, 1)[4:], rtol=1e-5, atol=1e-4)
    plain = rescale_bands(pred, obs, inits, verify, 1)
    assert not np.allclose(rolled[0][..., verify], plain[0][..., verify])  # the first init is rolled too
    np.testing.assert_array_equal(rolled[..., ~verify], pred[..., ~verify])  # held out: the model's band


def test_sampler_on_the_needed_hours_and_gathered_cells_forecast_as_the_whole_grid(tiny_store, model_meta):
    """make_sampler loads only the hours its inits need, and run_model's `cells` keeps only those cells: the
    forecasts equal those of a sampler over the whole store, cut from the whole grid."""
    from features.windows import WindowSampler
    from training.evaluate import init_times, make_sampler, run_model, time_window

    model, meta = model_meta
    t0 = np.datetime64("2021-01-03T00:00", "ns")
    inits = init_times(t0, t0 + np.timedelta64(18, "h"), 6)
    sampler, _ = make_sampler(tiny_store, inits, meta, model, input_stations=["Alpha", "Bravo", "Charlie"])
    assert sampler.times.size == (6 - 1) + 18 + 5 + 1 < tiny_store.sizes["time"]
    whole = WindowSampler(tiny_store, inits, history=6, leads=5, input_stations=["Alpha", "Bravo", "Charlie"],
                          **{f"{k}_vars": v for k, v in meta["channels"].items()})
    for k in range(len(inits)):
        for key, a in whole[k].items():
            np.testing.assert_array_equal(sampler[k][key], a, err_msg=key)
    r, c = sampler.station_row.astype(int), sampler.station_col.astype(int)
    grid = run_model(model, whole, batch_size=2)
    at = run_model(model, sampler, batch_size=2, cells=(r, c))
    assert grid.shape[-2:] == (tiny_store.sizes["y"], tiny_store.sizes["x"]) and at.shape[-1] == r.size
    np.testing.assert_array_equal(at, grid[..., r, c])
    later = np.datetime64("2031-01-01T00:00", "ns")  # no hour of the store there: the store as it is
    assert time_window(tiny_store, later, later + np.timedelta64(5, "h")) is tiny_store


def test_new_data_directory_gets_the_models_inputs(tmp_path, monkeypatch) -> None:
    """A data directory with no emission file beside it and a different station set still gets the emission
    inputs the model was trained with: the side file comes from the model's store options and the emission
    totals are spread by the training stations, not by the new ones."""
    from conftest import TINY_RAW_STATIONS, write_uci_dir

    from features.store import build_store
    from training.evaluate import build_store_for

    monkeypatch.setenv("AQCAST_SHARED_DATA", str(tmp_path / "no-shared"))
    side = tmp_path / "model_side" / "emissions"
    side.mkdir(parents=True)
    totals = side / "meic_china_sector_totals_2010_2017.csv"
    pd.DataFrame([{"species": sp, "year": yr, "sector": sec, "emission_tg": 1.0 + k}
                  for sp in ("NOx", "SO2", "NMVOC", "NH3", "PM2.5") for yr in (2020, 2021)
                  for k, sec in enumerate(("Power", "Industry", "Residential", "Transportation"))]
                 ).to_csv(totals, index=False)
    train_dir = write_uci_dir(tmp_path / "train" / "data", n_days=6)
    ref = build_store(train_dir, None, emission_totals=totals, progress=False)
    lons, lats = ref["station_lon"].values.tolist(), ref["station_lat"].values.tolist()
    meta = {"grid": ref.attrs["grid"], "store_options": {"emission_totals": str(totals),
                                                          "emission_proxy_points": [lons, lats]}}
    more = dict(TINY_RAW_STATIONS) | {"Echo": (116.40, 40.02), "Foxtrot": (116.33, 39.96)}
    new_dir = write_uci_dir(tmp_path / "elsewhere" / "data", n_days=6, stations=more)
    assert not (new_dir.parent / "emissions").exists()
    ds = build_store_for(new_dir, meta)
    assert ds.sizes["station"] == 5 and "emis_nox" in ds
    np.testing.assert_allclose(ds["emis_nox"].values, ref["emis_nox"].values, rtol=1e-6)
    unpinned = build_store(new_dir, None, grid=Grid.from_json(ref.attrs["grid"]), emission_totals=totals,
                           progress=False)
    assert not np.allclose(unpinned["emis_nox"].values, ref["emis_nox"].values)  # the new stations move it
    from training.config import BuildOptions
    from training.train import _store_options

    assert _store_options(BuildOptions(), ref)["weather_clock"] == "auto"  # the training store's clock rule
    assert json.loads(ds.attrs["weather_clock"])["mode"] == "auto"
    meta["store_options"]["weather_clock"] = "off"  # travels to the rebuilt inputs
    assert json.loads(build_store_for(new_dir, meta).attrs["weather_clock"])["mode"] == "off"
    meta["store_options"]["emission_totals"] = str(tmp_path / "gone" / totals.name)
    assert "emis_nox" not in build_store_for(new_dir, meta)  # nothing to find: missing, said in attrs


def test_contract_command_on_a_later_year_with_a_new_station(tmp_path, monkeypatch) -> None:
    """The contract end to end as the evaluators run it: a model trained from a raw directory and registered,
    then `aqcast backtest --model models:/... --data NEWDIR` on a later period whose directory has a station
    the model never saw (an input there) and a point where no station is."""
    from conftest import TINY_RAW_STATIONS, write_uci_dir
    from typer.testing import CliRunner

    from training.cli import build_app

    monkeypatch.setenv("AQCAST_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    import training.heap

    heap_calls: list[bool] = []  # which commands asked malloc to keep freed memory (M23, M25)
    real = training.heap.retain_freed_memory

    def spy() -> bool:
        heap_calls.append(real())
        return heap_calls[-1]

    monkeypatch.setattr(training.heap, "retain_freed_memory", spy)
    app, cli = build_app(), CliRunner()
    known = dict(TINY_RAW_STATIONS) | {"Delta": (116.38, 40.00)}  # Delta: the tiny config's held-out station
    res = cli.invoke(app, ["train", "--config", "configs/tiny.yaml", "--data",
                           str(write_uci_dir(tmp_path / "train" / "data", stations=known)), "--max-epochs", "1"])
    assert res.exit_code == 0, (res.output, res.exception)
    uri = res.stdout.strip().splitlines()[-1]
    later = write_uci_dir(tmp_path / "later" / "data", n_days=12, start="2021-06-01", seed=7,
                          stations=known | {"Echo": (116.40, 40.02)})
    pts = tmp_path / "points.csv"
    pts.write_text("point_id,lon,lat\nEcho,116.40,40.02\nnowhere,116.38,39.97\n")

    def backtest(data, out):
        res = cli.invoke(app, ["backtest", "--model", uri, "--data", str(data), "--from", "2021-06-03T00:00+08:00",
                               "--to", "2021-06-05T00:00+08:00", "--every", "24h", "--points", str(pts),
                               "--out", str(out)])
        assert res.exit_code == 0, (res.output, res.exception)
        assert "backtest: 3/3 inits" in res.stderr  # no terminal, no bar: a progress line instead
        assert "no UTC offset" not in res.stderr
        return pd.read_csv(out, dtype={"point_id": str})

    assert len(heap_calls) == 1  # `aqcast train`
    df = backtest(later, tmp_path / "fc.csv")
    assert len(heap_calls) == 2 and all(heap_calls) == sys.platform.startswith("linux")
    assert list(df.columns) == COLUMNS and len(df) == 3 * 72 * 2 * 2
    assert set(df["init_time"]) == {f"2021-06-0{d}T00:00+08:00" for d in (3, 4, 5)}
    assert sorted(df["lead_hours"].unique()) == list(range(1, 73)) and set(df["point_id"]) == {"Echo", "nowhere"}
    q = df[["p10", "p50", "p90"]].to_numpy()
    assert np.isfinite(q).all() and (q >= 0).all() and (q[:, 0] <= q[:, 1]).all() and (q[:, 1] <= q[:, 2]).all()
    # the new station is an input: without its file (the other stations' values unchanged) Echo's +1 h differs
    without = write_uci_dir(tmp_path / "later2" / "data", n_days=12, start="2021-06-01", seed=7, stations=known)
    df2 = backtest(without, tmp_path / "fc2.csv")
    key = (df["point_id"] == "Echo") & (df["lead_hours"] == 1) & (df["species"] == "pm25")
    assert df2[["init_time", "lead_hours", "point_id", "species"]].equals(df[["init_time", "lead_hours",
                                                                               "point_id", "species"]])
    assert np.abs(df.loc[key, "p50"].to_numpy() - df2.loc[key, "p50"].to_numpy()).max() > 0.1
    # `aqcast evaluate` on the same later directory: scorecard written, and it keeps the heap as well; a --to
    # without an offset is read as UTC (the same last init) and said so
    res = cli.invoke(app, ["evaluate", "--model", uri, "--data", str(later),
                           "--from", "2021-06-03T00:00+08:00", "--to", "2021-06-04T16:00", "--every", "24h",
                           "--no-gbt", "--no-mlflow", "--out", str(tmp_path / "eval")])
    assert res.exit_code == 0, (res.output, res.exception)
    assert (tmp_path / "eval" / "scorecard.md").is_file() and len(heap_calls) == 4
    assert "warning: --to 2021-06-04T16:00 has no UTC offset" in res.stderr and "--from 2021" not in res.stderr
    assert "2021-06-04T16:00:00" in (tmp_path / "eval" / "scorecard.md").read_text()  # the last init, in UTC


def test_rolling_bands_move_only_the_band_and_use_no_observation_after_the_init(tmp_path, tiny_store, model_meta):
    """P50 as without; the band rescaled in a station's cell once forecasts are verified, not in a cell without one;
    observations after an init leave it alone."""
    model, meta = model_meta
    pts = _points(tmp_path, tiny_store)
    span = ("2021-01-01T13:00+08:00", "2021-01-03T13:00+08:00", "6h")  # from the first init with a full history
    a = run_backtest(model, meta, "", *span, pts, tmp_path / "a.csv", store=tiny_store)
    b = run_backtest(model, meta, "", *span, pts, tmp_path / "b.csv", store=tiny_store, rolling_bands=1, chunk=3)
    assert a["p50"].equals(b["p50"])
    first = b["init_time"] == b["init_time"].iloc[0]   # nothing verified yet at the first init, none issued before
    assert np.allclose(a.loc[first, ["p10", "p90"]], b.loc[first, ["p10", "p90"]], atol=0.011)
    at = b["point_id"] == "alpha_site"                 # a station's cell; empty_corner has none
    assert not np.allclose(a.loc[~first & at, "p90"], b.loc[~first & at, "p90"], atol=0.05)
    assert np.allclose(a.loc[~at, ["p10", "p90"]], b.loc[~at, ["p10", "p90"]], atol=0.011)
    assert (b["p10"] <= b["p50"]).all() and (b["p50"] <= b["p90"]).all() and (b["p10"] >= 0).all()
    cut = np.datetime64("2021-01-02T11:00")           # 2021-01-02T19:00+08:00 in UTC
    ds = tiny_store.copy(deep=True)
    k = int(np.searchsorted(ds["time"].values, cut))
    for v in ds.data_vars:
        if v.startswith(("stn_", "obs_", "sat_")):
            ds[v].values[k + 1:] = ds[v].values[k + 1:] * 7 + 3  # every pollutant value after that init
    c = run_backtest(model, meta, "", *span, pts, tmp_path / "c.csv", store=ds, rolling_bands=1, chunk=3)
    upto = pd.to_datetime(b["init_time"]) <= pd.Timestamp("2021-01-02T19:00+08:00")
    assert b[upto].equals(c[upto]) and not b[~upto].equals(c[~upto])


def test_rolled_rows_do_not_depend_on_where_the_backtest_starts(tmp_path, tiny_store, model_meta):
    """The window at --from is filled with the forecasts the data allow before it (same cadence), so a run
    started a day later issues the same rows, rolled band included, from its first init on."""
    model, meta = model_meta
    pts = _points(tmp_path, tiny_store)
    end = ("2021-01-04T08:00+08:00", "6h")
    a = run_backtest(model, meta, "", "2021-01-02T08:00+08:00", *end, pts, tmp_path / "a.csv", store=tiny_store,
                     rolling_bands=1, chunk=3)
    notes: list[str] = []
    b = run_backtest(model, meta, "", "2021-01-03T08:00+08:00", *end, pts, tmp_path / "b.csv", store=tiny_store,
                     rolling_bands=1, chunk=5, echo=notes.append)
    assert "rolled band: 4 forecasts issued before --from verified first" in notes
    later = a[pd.to_datetime(a["init_time"]) >= pd.Timestamp("2021-01-03T08:00+08:00")].reset_index(drop=True)
    assert later[["init_time", "lead_hours", "point_id", "species"]].equals(
        b[["init_time", "lead_hours", "point_id", "species"]])
    assert np.allclose(later[["p10", "p50", "p90"]], b[["p10", "p50", "p90"]], atol=0.011)
    plain = run_backtest(model, meta, "", "2021-01-03T08:00+08:00", *end, pts, tmp_path / "c.csv",
                         store=tiny_store)
    first = (b["init_time"] == b["init_time"].iloc[0]) & (b["point_id"] == "alpha_site")
    assert not np.allclose(b.loc[first, "p90"], plain.loc[first, "p90"], atol=0.05)  # rolled from its first init
