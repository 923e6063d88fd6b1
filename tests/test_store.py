"""Feature store: training-period normalisation, roles, provenance, missing channels, open errors."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import write_uci_dir

from features.errors import DataError, MissingInputError
from features.store import (
    build_store,
    default_train_period,
    fit_norm_stats,
    open_store,
    sha256_file,
    store_meta,
    validate_store,
    write_store,
)
from features.windows import WindowSampler, valid_init_times


@pytest.fixture(scope="module")
def built(tiny_raw_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("store") / "s.zarr"
    ds = build_store(tiny_raw_dir, out, progress=False, command="pytest")
    return ds, out


def test_normalisation_fitted_on_training_period_only(tmp_path) -> None:
    train_to = "2021-01-20T23:00+08:00"
    a = write_uci_dir(tmp_path / "a", n_days=30)
    b = write_uci_dir(tmp_path / "b", n_days=30, scale_after="2021-01-22", factor=10.0)  # test period x10
    sa = build_store(a, None, train_period=train_to, progress=False)
    sb = build_store(b, None, train_period=train_to, progress=False)
    assert not np.allclose(sa["stn_pm25"].values[-24:], sb["stn_pm25"].values[-24:], equal_nan=True)
    na, nb = json.loads(sa.attrs["norm_stats"]), json.loads(sb.attrs["norm_stats"])
    assert na.keys() == nb.keys() and "stn_pm25" in na and "mean_log1p" in na["stn_pm25"]
    # log1p statistics for what is never negative (precipitation), none for what can be (temperature)
    assert "mean_log1p" in na["met_tp"] and "mean_log1p" not in na["met_t2m"]
    for k in na:
        for stat in na[k]:
            assert na[k][stat] == pytest.approx(nb[k][stat], rel=1e-6), (k, stat)
    assert json.loads(sa.attrs["train_period"]) == ["2020-12-31T16:00:00+00:00", "2021-01-20T15:00:00+00:00"]
    # and stats over the whole record would differ
    full = fit_norm_stats(sb, (sb["time"].values[0], sb["time"].values[-1]))
    assert full["stn_pm25"]["mean"] > 1.5 * nb["stn_pm25"]["mean"]


def test_default_train_period() -> None:
    long = pd.date_range("2013-03-01", "2016-02-29 23:00", freq="h").values
    _, e = default_train_period(long)
    assert e == pd.Timestamp("2016-02-29 23:00") - pd.Timedelta(days=365)
    short = pd.date_range("2021-01-01", periods=100, freq="h").values
    _, e = default_train_period(short)
    assert e == pd.Timestamp(short[69])  # first 70 % when < 2 years


def test_roles_and_layout(built) -> None:
    ds, _ = built
    roles = json.loads(ds.attrs["roles"])
    assert roles["stn_pm25"] == roles["stn_o3"] == "target" and roles["stn_no2"] == "observed"
    assert roles["met_t2m"] == "forcing" and roles["qc_pm25"] == "qc" and roles["station_distance_km"] == "static"
    assert set(roles) == set(map(str, ds.data_vars))
    assert all(ds[v].attrs["role"] == r for v, r in roles.items())
    assert ds["stn_pm25"].dims == ("time", "station") and ds["obs_pm25"].dims == ("time", "y", "x")
    assert ds["met_t2m"].dtype == np.float32 and ds["qc_pm25"].dtype == np.uint8
    assert "IDW" in ds["met_t2m"].attrs["derived"]
    assert np.all(np.diff(ds["time"].values) == np.timedelta64(1, "h")) and ds["time"].attrs["timezone"] == "UTC"
    # stations scattered into their cells
    r, c = ds["station_row"].values, ds["station_col"].values
    np.testing.assert_array_equal(ds["obs_pm25"].values[:, r, c], ds["stn_pm25"].values)
    assert ds.attrs["source_utc_offset"] == "+08:00"


def test_provenance(built, tiny_raw_dir) -> None:
    ds, out = built
    prov = json.loads(ds.attrs["provenance"])
    files = sorted(tiny_raw_dir.glob("PRSA_Data_*.csv"))
    by_path = {s["path"]: s["sha256"] for s in prov["sources"]}
    for f in files:
        assert by_path[str(f.resolve())] == sha256_file(f)
    assert prov["code_version"] and prov["command"] == "pytest" and prov["created"].endswith("+00:00")
    reopened = open_store(out)
    assert json.loads(reopened.attrs["provenance"]) == prov


def test_missing_optional_channels_listed(built) -> None:
    ds, out = built
    missing = json.loads(ds.attrs["missing"])
    for v in ("sat_aod", "sat_no2col", "met_blh", "met_ssr", "static_elevation", "emis_nox"):
        assert v in missing and v not in ds
    s = WindowSampler(open_store(out), valid_init_times(out, every_h=24))
    x = s[0]
    assert "sat_aod" not in s.obs_vars and x["static"].shape[0] == 1  # station_distance_km only


def test_optional_netcdf_inputs_used(tmp_path) -> None:
    d = write_uci_dir(tmp_path / "d", n_days=6)
    times = pd.date_range("2020-12-31T16:00", periods=6 * 24, freq="h").values
    lat, lon = np.arange(39.6, 40.5, 0.1), np.arange(115.9, 116.9, 0.1)
    aod = np.full((6, lat.size, lon.size), 0.4, np.float32)
    aod[::2, :, :4] = np.nan
    xr.Dataset({"aod": (("time", "latitude", "longitude"), aod, {"units": "1"})},
               coords={"time": times[13::24][:6] + np.timedelta64(30, "m"), "latitude": lat, "longitude": lon},
               ).to_netcdf(tmp_path / "d" / "satellite.nc", engine="h5netcdf")
    t2m = np.full((times.size, lat.size, lon.size), 280.0, np.float32)
    xr.Dataset({"t2m": (("time", "latitude", "longitude"), t2m, {"units": "K"})},
               coords={"time": times, "latitude": lat, "longitude": lon},
               ).to_netcdf(tmp_path / "d" / "meteorology.nc", engine="h5netcdf")
    ds = build_store(d, tmp_path / "s.zarr", progress=False)
    assert np.allclose(ds["met_t2m"].values, 280 - 273.15, atol=1e-3)
    assert "meteorology.nc" in ds["met_t2m"].attrs["derived"] and "IDW" in ds["met_d2m"].attrs["derived"]
    assert "sat_aod" in ds and "sat_no2col" in json.loads(ds.attrs["missing"])
    v = ds["sat_aod_valid"].values
    assert ((v >= 0) & (v <= 1)).all() and 0 < v.max() and (np.isnan(ds["sat_aod"].values) == (v == 0)).all()
    k = int(np.flatnonzero(np.isfinite(ds["sat_aod"].values).any(axis=(1, 2)))[0])
    assert pd.Timestamp(ds["time"].values[k]).hour == 6  # 05:30 overpass usable from 06:00
    hashes = {s["path"].split("/")[-1] for s in json.loads(ds.attrs["provenance"])["sources"]}
    assert {"satellite.nc", "meteorology.nc"} <= hashes


def test_open_store_errors(tmp_path, tiny_store) -> None:
    with pytest.raises(MissingInputError, match="no feature store"):
        open_store(tmp_path / "nope.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="not a zarr"):
        open_store(tmp_path / "plain")
    bad = tiny_store.copy()
    bad.attrs = {k: v for k, v in bad.attrs.items() if k != "norm_stats"}
    write_store(bad, tmp_path / "bad.zarr")
    with pytest.raises(DataError, match="norm_stats"):
        open_store(tmp_path / "bad.zarr")


def test_tiny_store_fixture_conforms(tiny_store, tiny_store_path) -> None:
    validate_store(tiny_store)
    ds = open_store(tiny_store_path)
    meta = store_meta(ds)
    assert set(meta["roles"]) == set(map(str, ds.data_vars)) and meta["missing"] == ["sat_no2col",
                                                                                      "sat_no2col_valid"]
    assert ds["time"].dtype == np.dtype("datetime64[ns]") and ds.sizes["y"] == ds.sizes["x"] == 16


def test_bad_data_dir_raises(tmp_path) -> None:
    with pytest.raises(MissingInputError):
        build_store(tmp_path / "absent", None, progress=False)
