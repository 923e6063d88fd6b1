"""Synthetic world on disk: formats, metadata, readers, reproducibility, scenario CLI path."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from features.errors import DataError
from features.synth.generate import generate, run_scenario
from features.synth.world import SynthConfig

UCI = ["No", "year", "month", "day", "hour", "PM2.5", "PM10", "SO2", "NO2", "CO", "O3", "TEMP", "PRES", "DEWP",
       "RAIN", "wd", "WSPM", "station"]
CFG = SynthConfig(days=3, nx=12, ny=12, seed=5, start="2015-03-01")


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(CFG, out)
    return out


def _digest(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir()) if p.is_file()}


def test_same_seed_bit_identical_files(world_dir, tmp_path):
    generate(CFG, tmp_path)
    assert _digest(world_dir) == _digest(tmp_path)


def test_station_csv_layout(world_dir):
    files = sorted(world_dir.glob("PRSA_Data_*_20150301-20150303.csv"))
    assert len(files) >= 3
    df = pd.read_csv(files[0], keep_default_na=True)
    assert list(df.columns) == UCI
    assert len(df) == 72 and (df["No"] == np.arange(1, 73)).all()
    assert (df.loc[:23, "hour"] == np.arange(24)).all() and df.loc[0, "day"] == 1  # local time from 00:00
    assert set(df["wd"].dropna()) <= {"N", "NNE", "NE", "ENE", "E", "ESE", "SE", "SSE", "S", "SSW", "SW", "WSW",
                                      "W", "WNW", "NW", "NNW"}
    assert df["PM2.5"].dropna().min() >= 0 and 900 < df["PRES"].dropna().mean() < 1050
    st = pd.read_csv(world_dir / "stations.csv")
    assert {"station", "lon", "lat"} <= set(st.columns)
    assert st["lon"].between(115.8, 117.0).all() and st["lat"].between(39.5, 40.5).all()
    assert (pd.read_csv(world_dir / "sources.csv").columns == ["source_id", "name", "sector", "lon", "lat"]).all()


@pytest.mark.parametrize("name,units", [
    ("meteorology.nc", {"t2m": "K", "d2m": "K", "sp": "Pa", "u10": "m s**-1", "v10": "m s**-1", "tp": "m",
                        "blh": "m", "ssrd": "J m**-2"}),
    ("satellite.nc", {"aod": "1", "no2col": "umol m-2"}),
    ("emissions.nc", {f"emis_{s}": "kg km-2 h-1" for s in ("nox", "so2", "voc", "nh3", "pm25")}),
    ("static.nc", {"elevation": "m"}),
    ("truth.nc", {"pm25": "ug m-3", "o3": "ug m-3"}),
])
def test_netcdf_vars_units_attrs(world_dir, name, units):
    with xr.open_dataset(world_dir / name, engine="h5netcdf") as ds:
        assert ds.attrs["synthetic"] == "true" and int(ds.attrs["seed"]) == 5 and ds.attrs["generator"]
        for v, u in units.items():
            assert ds[v].attrs["units"] == u, v
        assert ds["lon"].dims == ("y", "x") and ds["lat"].dims == ("y", "x")
        if "time" in ds.dims:
            assert ds[next(iter(units))].dims == ("time", "y", "x")
    if name == "emissions.nc":
        with xr.open_dataset(world_dir / name, engine="h5netcdf") as ds:
            for p in ("profile_hour", "profile_weekday", "profile_month"):
                assert np.allclose(ds[p].mean(ds[p].dims[1]), 1.0)
            assert ds.attrs["profile_utc_offset"] == "+08:00"


def test_truth_hourly_utc_and_satellite_overpass(world_dir):
    with xr.open_dataset(world_dir / "truth.nc", engine="h5netcdf") as t:
        assert t.sizes["time"] == 72 and str(t.time.values[0])[:13] == "2015-02-28T16"
        assert float(t.pm25.min()) >= 0
    with xr.open_dataset(world_dir / "satellite.nc", engine="h5netcdf") as s:
        assert s.sizes["time"] == 3
        assert all(str(v)[11:16] == "05:30" for v in s.time.values)  # 13:30 local


def test_readers_take_the_output(world_dir):
    stations = pytest.importorskip("features.readers.stations")
    ds = stations.read_stations(world_dir)
    assert ds.sizes["time"] == 72 and str(ds.time.values[0])[:13] == "2015-02-28T16"
    assert np.nanmean(ds["pm25"].values) > 5
    gridded = pytest.importorskip("features.readers.gridded")
    met = gridded.read_meteorology(world_dir / "meteorology.nc")
    assert abs(float(met["t2m"].mean()) - float(np.nanmean(ds["t2m"].values))) < 5  # degC both
    inv = gridded.read_emissions(world_dir / "emissions.nc")
    hourly = inv.hourly(met.time.values[:24])
    assert hourly["emis_nox"].dims[0] == "time" and float(hourly["emis_nox"].min()) >= 0


def test_emission_profiles_match_the_model(world_dir):
    """The reader's hourly emissions equal the sum the simulator uses (local-time profiles)."""
    gridded = pytest.importorskip("features.readers.gridded")
    from features.synth.emissions import SPECIES
    from features.synth.world import build_world

    w = build_world(CFG)
    inv = gridded.read_emissions(world_dir / "emissions.nc")
    k = 30
    got = inv.hourly(w.times[k:k + 1])["emis_nox"].values[0]
    local = w.times[k] + pd.Timedelta(hours=8)
    fac = w.inv.factors(local.hour, local.dayofweek, local.month - 1)
    want = np.einsum("s,syx->yx", fac, w.inv.maps[:, SPECIES.index("nox")])
    assert np.allclose(got, want, rtol=1e-5)


def test_scenario_zero_cut_and_bad_yaml(world_dir, tmp_path):
    y = tmp_path / "zero.yaml"
    y.write_text("name: zero\ncuts:\n  - factor: 1.0\n    start: '2015-03-02T00:00+08:00'\n")
    meta = run_scenario(world_dir, y)
    assert meta["restart_utc"].startswith("2015-03-01 16")  # the snapshot at local midnight
    with xr.open_dataset(world_dir / "truth.nc", engine="h5netcdf") as b, \
            xr.open_dataset(world_dir / "truth_scenario_zero.nc", engine="h5netcdf") as s:
        assert np.array_equal(b.pm25.sel(time=s.time).values, s.pm25.values)
        assert np.array_equal(b.o3.sel(time=s.time).values, s.o3.values)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ncuts:\n  - factor: -1\n    sectors: [shipping]\n")
    with pytest.raises(DataError) as e:
        run_scenario(world_dir, bad)
    assert len(e.value.problems) == 2
