"""docs/scorecard/calib_schemes.py and blend_diagnostic.py: the drop schemes and the mixes they score."""
import numpy as np
import pandas as pd
import pytest
from conftest import load_script


def test_one_drops_exactly_one_station_rotating_over_inits_and_fix_always_the_same():
    cs = load_script("calib_schemes")
    kept = np.array([cs.kept_inputs("one:0", 4, i) for i in range(8)])
    assert (kept.sum(1) == 3).all()
    assert [int(np.flatnonzero(~k)[0]) for k in kept] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert int(np.flatnonzero(~cs.kept_inputs("one:1", 4, 3))[0]) == 0  # (3 + 1) mod 4
    assert [int(np.flatnonzero(~cs.kept_inputs("fix:2", 4, i))[0]) for i in range(5)] == [2] * 5
    assert cs.kept_inputs("bern:3", 4, 0) is None  # the sampler's own draw
    with pytest.raises(ValueError, match="unknown scheme"):
        cs.kept_inputs("all", 4, 0)


def test_passes_concatenate_along_the_sample_axis():
    cs = load_script("calib_schemes")
    a = {"r_lo": np.zeros((2, 3)), "month": np.array([1, 2])}
    b = {"r_lo": np.ones((1, 3)), "month": np.array([5])}
    got = cs.concat_ratios([a, b])
    assert got["r_lo"].shape == (3, 3) and got["r_lo"][2].tolist() == [1, 1, 1]
    assert got["month"].tolist() == [1, 2, 5]


def test_mix_is_geometric_in_one_plus_p_and_errors_correlate_where_all_exist():
    bd = load_script("blend_diagnostic")
    a, b = np.array([0.0, 3.0, -2.0]), np.array([8.0, 3.0, 0.0])
    np.testing.assert_allclose(bd.log_mix(a, b, 0.5), [2.0, 3.0, 0.0])
    np.testing.assert_allclose(bd.log_mix(a, b, 0.0), [0.0, 3.0, 0.0])
    obs = np.array([1.0, 2.0, np.nan, 4.0])
    x, y = np.array([2.0, 4.0, 0.0, 7.0]), np.array([0.0, 0.0, 9.0, 1.0])  # errors +1 +2 . +3 / -1 -2 . -3
    assert bd.error_corr(x, y, obs) == pytest.approx(-1.0)


def test_feature_groups_spare_what_the_trees_offset_needs_and_the_calendar_hours():
    fg = load_script("gbt_feature_groups")
    names = ["lead", "pm25_lag0", "pm25_lag1", "pm25_lag2", "pm25_lag23", "pm25_mean6", "pm25_mean24",
             "pm25_diurnal", "o3_lag11", "no2_lag0", "co_mean24", "pm25_clim", "t2m_valid", "t2m_init", "ws_run",
             "sp_change", "hour_valid", "hour_init", "doy_sin", "weekday"]
    pick = {g: [names[i] for i in fg.group_columns(names, p)] for g, p in fg.GROUPS.items()}
    assert pick["history"] == ["pm25_lag2", "pm25_lag23", "pm25_mean24", "pm25_diurnal", "o3_lag11"]
    assert pick["other_pollutants"] == ["no2_lag0", "co_mean24"]
    assert pick["met_init_run"] == ["t2m_init", "ws_run", "sp_change"]  # not hour_init
    assert pick["met_valid"] == ["t2m_valid"]
    assert pick["calendar"] == ["hour_valid", "hour_init", "doy_sin", "weekday"]
    blanked = {n for v in pick.values() for n in v}
    assert {"lead", "pm25_lag0", "pm25_lag1", "pm25_mean6", "pm25_clim"}.isdisjoint(blanked)


def test_replay_steps_repeats_a_runs_next_epoch_and_names_an_overflow(tiny_store_path, tmp_path, monkeypatch):
    """docs/scorecard/replay_steps.py on a tiny two-epoch run: the next epoch replays with finite losses; with
    the forecast's ceiling lifted and a head that overflows, it stops at the first step and names the forecast."""
    import torch

    from training.config import load_config
    from training.train import run_training

    rs = load_script("replay_steps")
    monkeypatch.setenv("AQCAST_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    tiny = rs.ROOT / "configs" / "tiny.yaml"
    over = ["optim.max_epochs=2", "tracking.log_plots=false", "optim.patience=5"]
    run_training(load_config(tiny, over), store=str(tiny_store_path), run_name="rp", echo=lambda s: None)
    run_dir = tmp_path / "runs" / "rp"
    lines: list[str] = []
    assert rs.replay(run_dir, str(tiny_store_path), tiny, over, echo=lines.append) is None
    assert lines[0].startswith("step ") and "no non-finite loss" in lines[-1]
    ck = torch.load(run_dir / "best.ckpt", map_location="cpu", weights_only=False)
    ck["state_dict"]["net.head.bias"][1::3] = 500.0  # every P50 far beyond float32 once exp'd
    torch.save(ck, run_dir / "best.ckpt")
    found = rs.replay(run_dir, str(tiny_store_path), tiny, over, echo=lines.append, ceiling=False)
    assert found is not None and found["step"] == ck["global_step"] and found["lead"] >= 1
    assert rs.replay(run_dir, str(tiny_store_path), tiny, over, echo=lines.append) is None  # the ceiling holds


def test_average_checkpoints_means_the_learned_weights_and_keeps_the_calibration():
    import torch

    ac = load_script("average_checkpoints")
    best = {"net.members.0.w": torch.tensor([1.0, 3.0]), "net.gap_scale": torch.ones(2),
            "net.members.0.gap_hour": torch.zeros(2), "net.steps": torch.tensor([4])}
    last = {"net.members.0.w": torch.tensor([3.0, 5.0]), "net.gap_scale": torch.ones(2),
            "net.members.0.gap_hour": torch.zeros(2), "net.steps": torch.tensor([9])}
    sd = {"members.0.w": torch.tensor([1.0, 3.0]), "gap_scale": torch.full((2,), 1.3),
          "members.0.gap_hour": torch.full((2,), 0.2), "steps": torch.tensor([4])}
    assert ac.average_into(sd, best, last) == 1
    torch.testing.assert_close(sd["members.0.w"], torch.tensor([2.0, 4.0]))
    torch.testing.assert_close(sd["gap_scale"], torch.full((2,), 1.3))  # fitted after training: kept
    torch.testing.assert_close(sd["members.0.gap_hour"], torch.full((2,), 0.2))
    assert int(sd["steps"]) == 4  # integer buffers are not averaged
    other = {"members.0.w": torch.tensor([0.0, 3.0])}
    with pytest.raises(ValueError, match="not those of the best"):
        ac.average_into(other, best, last)


def test_input_station_distance_copy_counts_only_the_input_stations(tiny_store_path, tmp_path, capsys):
    import xarray as xr

    isd = load_script("input_station_distance")
    out = tmp_path / "di.zarr"
    isd.main(str(tiny_store_path), str(out), ["Delta"])
    a, b = xr.open_zarr(tiny_store_path), xr.open_zarr(out)
    r, c = int(a["station_row"][3]), int(a["station_col"][3])
    assert a["station_distance_km"].values[r, c] < 2.2 and b["station_distance_km"].values[r, c] > 10
    r0, c0 = int(a["station_row"][0]), int(a["station_col"][0])
    assert b["station_distance_km"].values[r0, c0] < 2.2  # an input station's own cell
    assert np.array_equal(a["obs_pm25"].values, b["obs_pm25"].values, equal_nan=True)  # everything else unchanged
    assert "Delta" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="Nowhere"):
        isd.main(str(tiny_store_path), str(tmp_path / "x.zarr"), ["Nowhere"])


def test_score_with_inputs_replaces_the_models_held_out_list(tiny_store_path):
    """The model's own held-out stations become inputs: only `--held-out` stays out, also of a training list."""
    import xarray as xr

    from training.evaluate import station_split

    swi = load_script("score_with_inputs")
    meta = {"held_out_stations": ["Charlie", "Delta"], "train_stations": ["Alpha", "Bravo"], "history": 24}
    m = swi.with_inputs(meta, ["Delta"])
    assert m == {"held_out_stations": ["Delta"], "history": 24} and meta["held_out_stations"] == ["Charlie", "Delta"]
    ds = xr.open_zarr(tiny_store_path)
    assert station_split(ds, m, ["Delta"]) == (["Alpha", "Bravo", "Charlie"], ["Delta"])
    assert station_split(ds, meta, ["Delta"])[1] == ["Charlie", "Delta"]  # what `aqcast evaluate` does


def test_seed_means_reads_each_models_matching_evaluation_and_means_the_margins(tmp_path, capsys):
    """Only the evaluation with the asked `from` and `every` counts; margins from the MAEs; the mean row averages."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("aqcast-evaluate")

    def log(version: int, start: str, every: str, deep: float) -> None:
        with mlflow.start_run(run_name="evaluate"):
            mlflow.log_params({"model": f"models:/aqcast/{version}", "from": start, "every": every})
            m = {}
            for sp in ("pm25", "o3"):
                for h in (24, 48, 72):
                    m |= {f"train_stations.{sp}.mae.h{h}": deep, f"train_stations.{sp}.mae_ref_gbt.h{h}": 40.0,
                          f"train_stations.{sp}.skill_vs_persistence.h{h}": 0.5,
                          f"train_stations.{sp}.skill_vs_climatology.h{h}": 0.3,
                          f"train_stations.{sp}.skill_vs_blend.h{h}": 0.4,
                          f"held_out_stations.{sp}.mae.h{h}": deep + 1}
            mlflow.log_metrics(m)

    log(1, "2014-03-01T00:00+08:00", "6h", 30.0)
    log(2, "2014-03-01T00:00+08:00", "6h", 34.0)
    log(2, "2014-03-01T00:00+08:00", "24h", 10.0)    # another issue hour: not read
    log(2, "2015-03-01T00:00+08:00", "6h", 10.0)     # another year: not read
    out = load_script("seed_means").main(["--models", "1,2", "--from", "2014-03", "--tracking-uri", uri])
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in out.splitlines() if line.startswith("| ")}
    assert rows["/1"][1] == "30.00 / 30.00 / 30.00" and rows["/1"][3] == "25.0 / 25.0 / 25.0"
    assert rows["/2"][3] == "15.0 / 15.0 / 15.0" and rows["/2"][4] == "30.0 / 30.0 / 30.0"
    assert rows["mean of 2"][1] == "32.00 / 32.00 / 32.00" and rows["mean of 2"][5] == "33.00 / 33.00 / 33.00"
    with pytest.raises(SystemExit, match="models:/aqcast/3"):
        load_script("seed_means").main(["--models", "3", "--from", "2014-03", "--tracking-uri", uri])


def test_season_band_scores_by_the_month_of_the_valid_time_at_the_stations_asked():
    sb = load_script("season_band")
    doy = np.array([14.0, 196.0])  # mid January, mid July (0-based day of year)
    a = 2 * np.pi * doy / 365.0
    season = np.broadcast_to(np.stack([np.sin(a), np.cos(a)], -1)[:, None, None, :], (2, 1, 3, 2))
    r = {"season": season, "valid": np.ones((2, 1, 2, 3), bool)}
    assert sb.valid_month(r)[:, 0, 0].tolist() == [0, 6]
    hit = np.zeros((2, 1, 2, 3), bool)
    hit[0, :, 1, 0] = True                              # January, O3, station 0 only
    cov = sb.by_month(hit, r, np.array([True, True, False]))
    assert cov[0, 1] == 0.5 and cov[0, 0] == 0.0 and cov[6, 1] == 0.0 and np.isnan(cov[3]).all()
    assert not sb.only(r, np.array([False, True, False]))["valid"][..., [0, 2]].any()


def test_issue_hours_reads_the_scorecards_summary_and_bias_and_means_over_models(tmp_path, capsys):
    """Scorecards written by `training.scorecard.markdown` are read back: MAE of deep and trees at 24/48/72 h,
    the margin from their means, the held-out MAE, and each model's P50 bias at 24 h; no evaluation is run
    when the scorecards are there."""
    from training.scorecard import markdown

    def card(version: int, hour: int) -> str:
        deep, bias = 20.0 + version + hour / 6, -float(version * 10 + hour // 6)
        lead = np.arange(1, 73, dtype=float)[:, None] * np.ones((1, 2))
        sc = {k: lead.copy() for k in ("rmse", "corr", "coverage_p10_p90", "aqi_class_accuracy")}
        sc |= {"n": np.full((72, 2), 100.0), "mae": np.full((72, 2), deep), "bias": np.full((72, 2), bias)}
        summ = {"train_stations": {"deep": np.full((72, 2), deep), "gbt": np.full((72, 2), 40.0),
                                   "n": np.full((72, 2), 100.0)},
                "held_out_stations": {"deep": np.full((72, 2), deep + 1), "n": np.full((72, 2), 50.0)}}
        held = {k: v.copy() for k, v in sc.items()} | {"bias": np.full((72, 2), 99.0)}
        return markdown({"train_stations": sc, "held_out_stations": held}, "t", [], summ)

    for v in (1, 2):
        for h in (0, 12):
            (tmp_path / f"ih-{v}-{h:02d}.md").write_text(card(v, h))
    ih = load_script("issue_hours")
    assert ih.bias_24h(tmp_path / "ih-2-12.md") == {"pm25": -22.0, "o3": -22.0}  # not the held-out table's 99
    ih.main(["--models", "1,2", "--store", "unused", "--out", str(tmp_path), "--hours", "0,12"])
    lines = capsys.readouterr().out.splitlines()
    assert "| 12:00 | 23.50 / 23.50 / 23.50 | 40.00 / 40.00 / 40.00 | 41.2 / 41.2 / 41.2 | 24.50 / 24.50 / 24.50 |" \
        in lines
    assert "| o3 | -10.0 / -20.0 | -12.0 / -22.0 |" in lines


def test_met_phase_finds_a_weather_column_that_runs_an_hour_late_from_some_month_on():
    """Two years of a sun-shaped temperature day; from the 14th month on it runs one hour late: the shift is +1
    there and 0 before, and the ozone control, never shifted, stays 0."""
    mp = load_script("met_phase")
    t = pd.date_range("2013-03-01", "2015-02-28 23:00", freq="h")
    lag = (t >= "2014-05-01").astype(int)
    def day(h):
        return np.cos(2 * np.pi * (h - 15) / 24) + 0.3 * np.cos(4 * np.pi * (h - 15) / 24)
    df = pd.DataFrame({"year": t.year, "month": t.month, "hour": t.hour, "TEMP": 10 + 8 * day(t.hour - lag),
                       "O3": 60 + 40 * day(t.hour)})
    s = mp.best_shifts(df, "TEMP")
    assert (s.loc[(2013, 3):(2014, 4)] == 0).all() and (s.loc[(2014, 5):] == 1).all()
    assert (mp.best_shifts(df, "O3") == 0).all()


def test_step_speed_times_stretches_from_the_logged_loss_and_skips_those_not_reached(tmp_path):
    """Seconds a step from the `train_loss` timestamps: a slow start shows in 10-110 and not in 20-120."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = mlflow.tracking.MlflowClient()
    run_id = client.create_run(client.create_experiment("x")).info.run_id
    t = 1_000_000.0  # seconds
    for step in range(10, 310, 10):
        t += 10 * (3.0 if step <= 20 else 0.5)  # steps 11-20 take 3 s each, the rest 0.5 s
        client.log_metric(run_id, "train_loss", 0.1, timestamp=int(t * 1000), step=step)
    s = load_script("step_speed").speeds(client, run_id)
    assert s["20-120"] == pytest.approx(0.5) and s["120-300"] == pytest.approx(0.5)
    assert s["10-110"] == pytest.approx((30 + 90 * 0.5) / 100)
    assert "400-600" not in s and s["steps"] == 300


def test_clock_alone_cuts_every_station_file_at_the_date(tiny_raw_dir, tmp_path):
    mod = load_script("clock_alone")
    out = mod.cut_directory(tiny_raw_dir, tmp_path / "alone", "2021-01-20")
    files = sorted(p.name for p in out.glob("PRSA_Data_*.csv"))
    assert files == sorted(p.name for p in tiny_raw_dir.glob("PRSA_Data_*.csv")) and (out / "stations.csv").is_file()
    for f in files:
        df = pd.read_csv(out / f)
        t = pd.to_datetime(df[["year", "month", "day", "hour"]])
        assert t.min() == pd.Timestamp("2021-01-20") and list(df["No"]) == list(range(1, len(df) + 1))
        assert len(df) == len(pd.read_csv(tiny_raw_dir / f)) - 19 * 24
