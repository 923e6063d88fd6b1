"""Gridded readers on small NetCDF files written here; elevation .npy and MEIC totals (real, if present)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from features.errors import DataError, MissingInputError, UnitsError
from features.paths import shared_data_dir
from features.readers import (
    read_elevation_npy,
    read_emission_totals,
    read_emissions,
    read_meteorology,
    read_satellite,
    read_static,
)

TIMES = pd.date_range("2020-01-01", periods=6, freq="h")
LAT = np.array([40.5, 40.0, 39.5])  # ERA5 order: north -> south
LON = np.array([116.0, 116.5, 117.0, 117.5])


def met_file(path: Path, *, curvilinear: bool = False, drop: tuple[str, ...] = (), units: dict | None = None) -> Path:
    shape = (len(TIMES), 3, 4)
    vals = {"t2m": (283.15, "K"), "d2m": (273.15, "K"), "sp": (101300.0, "Pa"), "u10": (3.0, "m s**-1"),
            "v10": (-4.0, "m s**-1"), "tp": (0.002, "m"), "blh": (800.0, "m"), "ssrd": (1.8e6, "J m**-2")}
    data = {}
    for k, (v, u) in vals.items():
        if k in drop:
            continue
        arr = np.full(shape, v, dtype=np.float32)
        data[k] = (("time", "y", "x") if curvilinear else ("time", "latitude", "longitude"), arr,
                   {"units": (units or {}).get(k, u)})
    if curvilinear:
        lon2, lat2 = np.meshgrid(LON, LAT)
        ds = xr.Dataset(data, coords={"time": TIMES, "lon": (("y", "x"), lon2), "lat": (("y", "x"), lat2)})
    else:
        ds = xr.Dataset(data, coords={"time": TIMES, "latitude": LAT, "longitude": LON})
    ds.to_netcdf(path, engine="h5netcdf")
    return path


def test_meteorology_units_and_grid(tmp_path: Path):
    ds = read_meteorology(met_file(tmp_path / "meteorology.nc"))
    assert float(ds["t2m"][0, 0, 0]) == pytest.approx(10.0, abs=1e-4)
    assert float(ds["d2m"][0, 0, 0]) == pytest.approx(0.0, abs=1e-4)
    assert float(ds["sp"][0, 0, 0]) == pytest.approx(1013.0)
    assert float(ds["tp"][0, 0, 0]) == pytest.approx(2.0)
    assert float(ds["ssr"][0, 0, 0]) == pytest.approx(500.0)
    assert float(ds["ws"][0, 0, 0]) == pytest.approx(5.0)
    assert float(ds["rh"][0, 0, 0]) == pytest.approx(50.0, abs=1.5)
    assert ds["t2m"].attrs["units"] == "degC" and ds["ssr"].attrs["units"] == "W m-2"
    assert (np.diff(ds["latitude"].values) > 0).all()  # re-ordered south -> north
    assert ds["time"].attrs["timezone"] == "UTC" and json.loads(ds.attrs["missing"]) == []
    assert len(json.loads(ds.attrs["sources"])[0]["sha256"]) == 64


def test_meteorology_curvilinear(tmp_path: Path):
    ds = read_meteorology(met_file(tmp_path / "m.nc", curvilinear=True))
    assert ds["t2m"].dims == ("time", "y", "x") and ds["lon"].dims == ("y", "x")


def test_missing_channel_is_reported_not_fatal(tmp_path: Path):
    ds = read_meteorology(met_file(tmp_path / "m.nc", drop=("blh", "ssrd", "v10")))
    assert "blh" not in ds and "ws" not in ds
    assert set(json.loads(ds.attrs["missing"])) == {"blh", "ssr", "v10", "ws"}


def test_unknown_units_name_file_and_variable(tmp_path: Path):
    with pytest.raises(UnitsError) as e:
        read_meteorology(met_file(tmp_path / "bad.nc", units={"t2m": "degF", "sp": "psi"}))
    msg = str(e.value)
    assert "bad.nc" in msg and "'t2m'" in msg and "degF" in msg and "'sp'" in msg
    assert len(e.value.problems) == 2


def test_missing_units_attr(tmp_path: Path):
    p = met_file(tmp_path / "m.nc")
    ds = xr.open_dataset(p, engine="h5netcdf").load()
    del ds["blh"].attrs["units"]
    ds.to_netcdf(tmp_path / "n.nc", engine="h5netcdf")
    with pytest.raises(UnitsError, match=r"n\.nc.*'blh'.*no 'units'"):
        read_meteorology(tmp_path / "n.nc")


def test_satellite_keeps_gaps(tmp_path: Path):
    aod = np.full((2, 3, 4), 0.4, dtype=np.float32)
    aod[0, 1, 1] = np.nan
    t = pd.to_datetime(["2020-01-01T05:30", "2020-01-02T05:25"])
    ds = xr.Dataset({"aod": (("time", "lat", "lon"), aod, {"units": "1"}),
                     "no2col": (("time", "lat", "lon"), np.full((2, 3, 4), 1e-4), {"units": "mol m-2"})},
                    coords={"time": t, "lat": LAT, "lon": LON})
    ds.to_netcdf(tmp_path / "satellite.nc", engine="h5netcdf")
    out = read_satellite(tmp_path / "satellite.nc")
    assert np.isnan(out["aod"].values).sum() == 1
    assert float(out["no2col"].max()) == pytest.approx(100.0)  # mol m-2 -> umol m-2
    assert out["time"].values[0] == np.datetime64("2020-01-01T05:30")
    assert "latitude" in out.dims


def write_emissions(path: Path, *, profiles: bool = True) -> Path:
    nsec = 2
    maps = np.ones((nsec, 3, 4), dtype=np.float32)
    maps[1] *= 2.0
    data = {"emis_nox": (("sector", "y", "x"), maps, {"units": "kg km-2 h-1"}),
            "emis_so2": (("sector", "y", "x"), maps / 3.6e9, {"units": "kg m-2 s-1"})}
    if profiles:
        hour = np.ones((nsec, 24))
        hour[:, 8] = 2.0
        hour[:, 20] = 0.0
        week = np.ones((nsec, 7))
        week[:, 6], week[:, 5] = 0.5, 1.5
        data.update(profile_hour=(("sector", "hour"), hour), profile_weekday=(("sector", "weekday"), week),
                    profile_month=(("sector", "month"), np.ones((nsec, 12))))
    lon2, lat2 = np.meshgrid(LON, LAT)
    ds = xr.Dataset(data, coords={"sector": ["power", "traffic"], "lon": (("y", "x"), lon2),
                                  "lat": (("y", "x"), lat2)})
    ds.to_netcdf(path, engine="h5netcdf")
    return path


def test_emissions_hourly_series(tmp_path: Path):
    inv = read_emissions(write_emissions(tmp_path / "emissions.nc"))
    times = pd.date_range("2020-01-04 06:00", periods=4, freq="h")  # a Saturday (weekday 5)
    out = inv.hourly(times)
    assert out["emis_nox"].dims == ("time", "y", "x")
    v = out["emis_nox"].values[:, 0, 0]  # sectors sum 1 + 2 = 3, x weekday 1.5, x hour profile
    np.testing.assert_allclose(v, [4.5, 4.5, 9.0, 4.5], rtol=1e-6)
    assert float(out["emis_so2"][0, 0, 0]) == pytest.approx(4.5, rel=1e-5)  # kg m-2 s-1 -> kg km-2 h-1
    shifted = inv.hourly(times, utc_offset="+08:00")  # profiles indexed by local time
    np.testing.assert_allclose(shifted["emis_nox"].values[:, 0, 0], 4.5, rtol=1e-6)  # local 14-17 h: flat
    assert out["time"].attrs["timezone"] == "UTC"


def test_emissions_without_profiles_are_flat(tmp_path: Path):
    inv = read_emissions(write_emissions(tmp_path / "e.nc", profiles=False))
    assert "profile_hour" in inv.missing
    out = inv.hourly(pd.date_range("2020-01-01", periods=3, freq="h"))
    np.testing.assert_allclose(out["emis_nox"].values[:, 0, 0], 3.0)


def test_static_elevation(tmp_path: Path):
    ds = xr.Dataset({"elevation": (("latitude", "longitude"), np.arange(12.0).reshape(3, 4), {"units": "m"})},
                    coords={"latitude": LAT, "longitude": LON})
    ds.to_netcdf(tmp_path / "static.nc", engine="h5netcdf")
    out = read_static(tmp_path / "static.nc")
    assert out["elevation"].attrs["units"] == "m" and float(out["elevation"].sel(latitude=40.5)[0]) == 0.0


def test_elevation_npy(tmp_path: Path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "e.npy", a)
    da = read_elevation_npy(tmp_path / "e.npy", lat_north=48.0, lon_west=100.0, res_deg=0.05)
    assert float(da.sel(latitude=48.0, longitude=100.0)) == 0.0  # row 0 = north
    assert float(da.sel(latitude=47.9, longitude=100.15)) == 11.0
    assert (np.diff(da["latitude"].values) > 0).all()


@pytest.mark.real_data
def test_elevation_npy_real():
    p = shared_data_dir() / "elevation" / "altitude_0.05deg_china.npy"
    if not p.is_file():
        pytest.skip(f"real data not found at {p}")
    da = read_elevation_npy(p)
    assert da.shape == (641, 561)
    assert float(da["latitude"].min()) == pytest.approx(16.0) and float(da["longitude"].max()) == pytest.approx(128.0)
    assert float(da.sel(latitude=39.9, longitude=116.4, method="nearest")) < 100  # Beijing plain
    assert float(da.sel(latitude=31.0, longitude=88.0 + 12, method="nearest")) > 1000  # Tibetan margin (100E)


def test_emission_totals_shares(tmp_path: Path):
    p = tmp_path / "t.csv"
    p.write_text("species,year,sector,emission_tg\nSO2,2013,Power,3\nSO2,2013,Industry,1\nNOx,2013,Power,2\n")
    t = read_emission_totals(p)
    s = t.set_index(["species", "year", "sector"])["share"]
    assert s[("SO2", 2013, "Power")] == pytest.approx(0.75) and s[("NOx", 2013, "Power")] == 1.0


@pytest.mark.real_data
def test_emission_totals_real():
    p = shared_data_dir() / "emissions" / "meic_china_sector_totals_2010_2017.csv"
    if not p.is_file():
        pytest.skip(f"real data not found at {p}")
    t = read_emission_totals(p)
    assert len(t) == 528
    sums = t.groupby(["species", "year"])["share"].sum()
    np.testing.assert_allclose(sums.values, 1.0)


def test_missing_netcdf_is_missing_input(tmp_path: Path):
    with pytest.raises(MissingInputError, match="nope.nc"):
        read_meteorology(tmp_path / "nope.nc")
    with pytest.raises(DataError):
        read_static(tmp_path / "nope.nc")
