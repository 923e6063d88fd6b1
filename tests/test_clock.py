"""features.clock: months whose weather runs whole hours off the first year's clock are found and realigned."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from features.clock import WEATHER_VARS, correct_weather_clock, month_lags, summary
from features.errors import DataError
from features.paths import shared_data_dir

OFFSET = "+08:00"


def _weather(late_from: str | None = None, late_vars: tuple[str, ...] = WEATHER_VARS, k: int = 1,
             months: int = 26, seed: int = 0) -> tuple[xr.Dataset, xr.Dataset]:
    """(recorded, true) station data: a sun-set temperature day and pressure tide plus weather noise; from
    `late_from` (local) on, `late_vars` are recorded k hours late (label t holds the weather of t - k)."""
    rng = np.random.default_rng(seed)
    local = pd.date_range("2013-03-01", periods=24 * 30 * months, freq="h")
    utc = (local - pd.Timedelta(hours=8)).to_numpy()
    h = local.hour.to_numpy()
    n_st = 3
    true = {}
    for v in WEATHER_VARS:
        walk = np.cumsum(rng.normal(0, 0.3, (n_st, local.size)), axis=1)
        if v == "t2m":
            base = 8 * np.cos(2 * np.pi * (h - 15) / 24)
        elif v == "sp":
            base = 0.8 * np.cos(2 * np.pi * 2 * (h - 10) / 24) + 0.5 * np.cos(2 * np.pi * (h - 6) / 24)
        else:
            base = np.cos(2 * np.pi * (h - 14) / 24)
        true[v] = (base + walk * 0.3 + rng.normal(0, 1.0, (n_st, local.size))).astype(np.float32)
    rec = {v: a.copy() for v, a in true.items()}
    if late_from is not None:
        late = np.flatnonzero(local >= pd.Timestamp(late_from))
        for v in late_vars:
            rec[v][:, late] = true[v][:, np.clip(late - k, 0, local.size - 1)]
    coords = {"station": ["A", "B", "C"], "time": utc}
    o3 = np.tile(40 + 30 * np.cos(2 * np.pi * (h - 15) / 24), (n_st, 1)).astype(np.float32)

    def ds(d: dict) -> xr.Dataset:
        return xr.Dataset({**{v: (("station", "time"), a) for v, a in d.items()},
                           "o3": (("station", "time"), o3)}, coords=coords)
    return ds(rec), ds(true)


def test_late_months_found_and_realigned() -> None:
    rec, true = _weather(late_from="2014-11-01")
    out, rep = correct_weather_clock(rec, OFFSET)
    local = pd.DatetimeIndex(rec["time"].values) + pd.Timedelta(hours=8)
    late_months = sorted({m for m in local.strftime("%Y-%m") if m >= "2014-11"})
    assert rep["shifts_h"] == {m: 1 for m in late_months}
    assert rep["applied"] and rep["undetermined"] == []
    inside = np.flatnonzero(local >= pd.Timestamp("2014-11-01"))[:-1]   # the record's last hour has no next one
    for v in WEATHER_VARS:
        np.testing.assert_array_equal(out[v].values[:, inside], true[v].values[:, inside])
        np.testing.assert_array_equal(out[v].values[:, : inside[0]], rec[v].values[:, : inside[0]])
        assert np.isnan(out[v].values[:, -1]).all()
    np.testing.assert_array_equal(out["o3"].values, rec["o3"].values)  # pollutants keep their clock
    assert "realigned" in summary(rep) and "+1 h" in summary(rep)


def test_off_reports_without_moving_and_on_time_data_untouched() -> None:
    rec, _ = _weather(late_from="2014-11-01")
    out, rep = correct_weather_clock(rec, OFFSET, "off")
    assert rep["shifts_h"] and not rep["applied"]
    assert out is rec and "NOT realigned" in summary(rep)
    clean, _ = _weather()
    out, rep = correct_weather_clock(clean, OFFSET)
    assert rep["shifts_h"] == {} and rep["undetermined"] == [] and out is clean
    lags = month_lags(clean, OFFSET)
    assert len(lags) >= 13 and float(lags.abs().max().max()) < 0.5


def test_two_hours_early() -> None:
    rec, _ = _weather(late_from="2014-06-01", k=-2)
    _, rep = correct_weather_clock(rec, OFFSET)
    assert set(rep["shifts_h"].values()) == {-2} and min(rep["shifts_h"]) == "2014-06"


def test_disagreeing_clues_leave_the_month_as_recorded() -> None:
    rec, _ = _weather(late_from="2014-11-01", late_vars=("t2m",))  # temperature late, pressure on time
    out, rep = correct_weather_clock(rec, OFFSET)
    assert rep["shifts_h"] == {} and "2015-01" in rep["undetermined"]
    np.testing.assert_array_equal(out["t2m"].values, rec["t2m"].values)
    assert "undetermined" in summary(rep)


def test_short_record_is_not_judged() -> None:
    rec, _ = _weather(late_from="2013-06-01", months=11)   # every month is its own reference: nothing to judge
    _, rep = correct_weather_clock(rec, OFFSET)
    assert rep["shifts_h"] == {} and len(rep["lags_h"]) == 11
    assert {x for lags in rep["lags_h"].values() for x in lags.values()} == {0.0}


def test_a_later_year_alone_is_judged_by_the_models_clock() -> None:
    """A directory holding only a later year whose every month runs late is on time against itself; against
    the reference phases of the record a model was trained on, every month is found late and realigned."""
    rec, true = _weather(late_from="2014-11-01")
    model_ref = correct_weather_clock(rec, OFFSET)[1]["reference_phases"]  # the training record's first year
    assert set(model_ref) == {"t2m", "sp"} and len(model_ref["t2m"]) == 12
    local = pd.DatetimeIndex(rec["time"].values) + pd.Timedelta(hours=8)
    later = np.flatnonzero(local >= pd.Timestamp("2015-01-01"))
    alone, alone_true = rec.isel(time=later), true.isel(time=later)
    assert correct_weather_clock(alone, OFFSET)[1]["shifts_h"] == {}  # its own first year is late too
    out, rep = correct_weather_clock(alone, OFFSET, reference=model_ref)
    months = sorted(set(local[later].strftime("%Y-%m")))
    assert rep["shifts_h"] == {m: 1 for m in months} and rep["applied"] and rep["reference_phases"] == model_ref
    np.testing.assert_array_equal(out["t2m"].values[:, :-1], alone_true["t2m"].values[:, :-1])
    assert "the model's training clock" in summary(rep)


def test_a_store_of_a_late_year_alone_is_flagged_against_the_models_clock(capsys) -> None:
    from features.clock import reference_offset
    from training.commands import _check_store_clock

    rec, true = _weather(late_from="2014-11-01")
    model_ref = correct_weather_clock(true, OFFSET)[1]["reference_phases"]
    local = pd.DatetimeIndex(rec["time"].values) + pd.Timedelta(hours=8)
    alone = rec.isel(time=np.flatnonzero(local >= pd.Timestamp("2015-01-01")))
    own = correct_weather_clock(alone, OFFSET)[1]["reference_phases"]  # what `aqcast features build` keeps
    assert reference_offset(own, model_ref) == pytest.approx(1.0, abs=0.3)
    assert abs(reference_offset(model_ref, model_ref)) < 1e-9 and reference_offset({}, model_ref) is None
    meta = {"store_options": {"weather_clock_reference": model_ref}}
    _check_store_clock(xr.Dataset(attrs={"weather_clock": json.dumps({"reference_phases": own})}), meta, "S")
    assert "+1.0 h off the clock the model was trained on" in capsys.readouterr().err
    _check_store_clock(xr.Dataset(attrs={"weather_clock": json.dumps({"reference_phases": model_ref})}), meta, "S")
    assert capsys.readouterr().err == ""


def test_bad_mode_is_a_data_error() -> None:
    rec, _ = _weather(months=2)
    with pytest.raises(DataError, match="weather_clock"):
        correct_weather_clock(rec, OFFSET, "sometimes")


def test_store_records_the_rule(tmp_path) -> None:
    from conftest import write_uci_dir

    from features.store import build_store, store_meta

    d = write_uci_dir(tmp_path / "raw", n_days=20)
    ds = build_store(d, None, progress=False)
    rep = store_meta(ds)["weather_clock"]
    assert rep["mode"] == "auto" and rep["shifts_h"] == {} and not rep["applied"]
    assert json.loads(build_store(d, None, progress=False, weather_clock="off").attrs["weather_clock"])["mode"] \
        == "off"
    from training.config import BuildOptions
    from training.train import _store_options

    opts = _store_options(BuildOptions(), ds)  # what a model trained on this store keeps
    assert opts["weather_clock_reference"] == rep["reference_phases"] and rep["reference_phases"]["t2m"]
    again = store_meta(build_store(d, None, progress=False, weather_clock_reference=opts["weather_clock_reference"]))
    assert again["weather_clock"]["reference"].startswith("the model's training record")


@pytest.mark.skipif(not (shared_data_dir() / "beijing").is_dir(), reason="needs ../shared/data/beijing")
def test_beijing_weather_runs_one_hour_late_from_2014_11() -> None:
    from features.readers.stations import read_stations

    st = read_stations(shared_data_dir() / "beijing")
    _, rep = correct_weather_clock(st, OFFSET, "off")
    late = [f"{y}-{m:02d}" for y in (2014, 2015, 2016) for m in range(1, 13) if "2014-11" <= f"{y}-{m:02d}" <= "2016-02"]
    assert rep["shifts_h"] == {m: 1 for m in late} and rep["undetermined"] == []
