"""Station reader (UCI layout): time zones, wind, RH, continuity, real Beijing data."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.errors import DataError
from features.paths import shared_data_dir
from features.readers.stations import read_stations
from features.units import relative_humidity, wind_components

COLS = "No,year,month,day,hour,PM2.5,PM10,SO2,NO2,CO,O3,TEMP,PRES,DEWP,RAIN,wd,WSPM,station"


def write_station(d: Path, name: str, start: str = "2013-03-01 00:00", hours: int = 48, *,
                  wd: str = "N", wspm: float = 2.0, skip: tuple[int, ...] = (), extra: dict | None = None) -> Path:
    """One small PRSA_Data_<name>_*.csv in local time; `skip` leaves rows out (missing hours)."""
    t = pd.date_range(start, periods=hours, freq="h")
    lines = [COLS]
    for i, ts in enumerate(t):
        if i in skip:
            continue
        row = {"PM2.5": 10 + i % 7, "PM10": 20 + i % 5, "SO2": 5, "NO2": 30 + i % 3, "CO": 500 + 100 * (i % 4),
               "O3": 40 + i % 9, "TEMP": 10.0 + 0.1 * (i % 10), "PRES": 1010.0 + 0.1 * (i % 6),
               "DEWP": 0.0, "RAIN": 0.0, "wd": wd, "WSPM": wspm, **(extra or {})}
        vals = [i + 1, ts.year, ts.month, ts.day, ts.hour] + [row[c] for c in COLS.split(",")[5:17]] + [name]
        lines.append(",".join(str(v) for v in vals))
    p = d / f"PRSA_Data_{name}_{t[0]:%Y%m%d}-{t[-1]:%Y%m%d}.csv"
    p.write_text("\n".join(lines) + "\n")
    return p


def write_table(d: Path, names: list[str], lon: float = 116.4, lat: float = 39.9) -> Path:
    p = d / "stations.csv"
    rows = ["station,cnemc_id,name_zh,lon,lat"] + [f"{n},{i}A,站{i},{lon + 0.01 * i},{lat}" for i, n in
                                                   enumerate(names)]
    p.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return p


@pytest.fixture
def two_stations(tmp_path: Path) -> Path:
    write_station(tmp_path, "Alpha")
    write_station(tmp_path, "Beta", start="2013-03-01 06:00", hours=30, skip=(3, 4))
    write_table(tmp_path, ["Alpha", "Beta"])
    return tmp_path


def test_contract_shape_units_attrs(two_stations: Path):
    ds = read_stations(two_stations)
    assert list(ds.dims) == ["station", "time"] or set(ds.dims) == {"station", "time"}
    assert ds["station"].values.tolist() == ["Alpha", "Beta"]
    for v in ["pm25", "pm10", "so2", "no2", "co", "o3", "t2m", "d2m", "sp", "tp", "ws", "u10", "v10", "rh"]:
        assert ds[v].dtype == np.float32 and ds[v].dims == ("station", "time")
        assert ds[v].attrs["units"]
    assert ds["pm25"].attrs["units"] == "ug m-3" and ds["sp"].attrs["units"] == "hPa"
    assert ds["time"].dtype == np.dtype("datetime64[ns]") and ds["time"].attrs["timezone"] == "UTC"
    assert ds.attrs["source_utc_offset"] == "+08:00"
    src = json.loads(ds.attrs["sources"])
    assert len(src) == 2 and all(len(s["sha256"]) == 64 and Path(s["path"]).is_file() for s in src)
    assert ds["lon"].dims == ("station",) and ds["lat"].values[0] == pytest.approx(39.9)


def test_timezone_local_to_utc(two_stations: Path):
    ds = read_stations(two_stations)
    # local 2013-03-01 00:00 +08:00 -> 2013-02-28 16:00 UTC
    assert ds["time"].values[0] == np.datetime64("2013-02-28T16:00")
    assert ds["pm25"].sel(station="Alpha").values[0] == 10.0


def test_other_offset_and_no_dst(tmp_path: Path):
    # a DST-free fixed offset: summer and winter convert identically
    write_station(tmp_path, "Alpha", start="2014-07-01 00:00", hours=3)
    write_table(tmp_path, ["Alpha"])
    ds = read_stations(tmp_path, utc_offset="-05:30")
    assert ds["time"].values[0] == np.datetime64("2014-07-01T05:30")
    assert ds.attrs["source_utc_offset"] == "-05:30"
    ds8 = read_stations(tmp_path)
    assert ds8["time"].values[0] == np.datetime64("2014-06-30T16:00")
    with pytest.raises(DataError, match="UTC offset"):
        read_stations(tmp_path, utc_offset="Asia/Shanghai")


def test_time_axis_continuous_with_gaps(two_stations: Path):
    ds = read_stations(two_stations)
    t = ds["time"].values
    assert (np.diff(t) == np.timedelta64(1, "h")).all()
    assert len(t) == 48  # union: Alpha covers 48 h, Beta lies inside
    beta = ds["pm25"].sel(station="Beta").values
    assert np.isnan(beta[:6]).all()  # before Beta starts
    assert np.isnan(beta[6 + 3]) and np.isnan(beta[6 + 4]) and not np.isnan(beta[6 + 5])
    assert np.isnan(beta[36:]).all()


@pytest.mark.parametrize("wd,ws,u,v", [
    ("N", 2.0, 0.0, -2.0), ("E", 3.0, -3.0, 0.0), ("S", 2.0, 0.0, 2.0), ("W", 1.5, 1.5, 0.0),
    ("NE", np.sqrt(2), -1.0, -1.0), ("SSW", 1.0, np.sin(np.deg2rad(22.5)), np.cos(np.deg2rad(22.5))),
])
def test_wind_conversion(tmp_path: Path, wd: str, ws: float, u: float, v: float):
    write_station(tmp_path, "Alpha", hours=2, wd=wd, wspm=ws)
    write_table(tmp_path, ["Alpha"])
    ds = read_stations(tmp_path)
    assert float(ds["u10"][0, 0]) == pytest.approx(u, abs=1e-5)
    assert float(ds["v10"][0, 0]) == pytest.approx(v, abs=1e-5)
    assert float(ds["ws"][0, 0]) == pytest.approx(ws, abs=1e-6)


@pytest.mark.parametrize("wd,ws,expect", [("cv", 0.0, 0.0), ("cv", 1.2, np.nan), ("", 0.0, 0.0),
                                          ("", 2.0, np.nan), ("NA", 1.0, np.nan)])
def test_calm_and_missing_direction(tmp_path: Path, wd: str, ws: float, expect: float):
    write_station(tmp_path, "Alpha", hours=2, wd=wd, wspm=ws)
    write_table(tmp_path, ["Alpha"])
    ds = read_stations(tmp_path)
    np.testing.assert_equal(float(ds["u10"][0, 0]), expect)
    np.testing.assert_equal(float(ds["v10"][0, 0]), expect)
    assert float(ds["ws"][0, 0]) == pytest.approx(ws)


def test_wind_components_function():
    u, v = wind_components(np.array([2.0, 2.0]), np.array([0.0, 90.0]))
    assert u[0] == 0.0 and v[0] == -2.0 and u[1] == -2.0 and v[1] == 0.0


def test_relative_humidity_magnus():
    rh = relative_humidity(np.array([20.0, 10.0, 0.0, 5.0]), np.array([20.0, 0.0, -10.0, 5.5]))
    assert rh[0] == pytest.approx(100.0)
    assert rh[1] == pytest.approx(50.0, abs=1.5)  # tables: 10/0 degC -> ~50 %
    assert rh[2] == pytest.approx(46.0, abs=2.5)
    assert rh[3] == 100.0  # dew point slightly above T (rounding) is clipped


def test_missing_values_are_not_errors(tmp_path: Path):
    p = write_station(tmp_path, "Alpha", hours=3)
    lines = p.read_text().splitlines()
    lines[1] = "1,2013,3,1,0,NA,,NA,,,,,,,,,,Alpha"
    p.write_text("\n".join(lines) + "\n")
    write_table(tmp_path, ["Alpha"])
    ds = read_stations(tmp_path)
    assert np.isnan(ds["pm25"][0, 0]) and np.isnan(ds["u10"][0, 0]) and ds["pm25"][0, 1] == 11.0


def test_several_files_per_station_and_extra_columns(tmp_path: Path):
    write_station(tmp_path, "Alpha", start="2013-03-01 00:00", hours=24)
    write_station(tmp_path, "Alpha", start="2013-03-02 00:00", hours=24)
    (tmp_path / "stations.csv").write_text("station,lon,lat,elevation\nAlpha,116.4,39.9,50\n")
    ds = read_stations(tmp_path)
    assert ds.sizes["time"] == 48 and not np.isnan(ds["pm25"].values).any()


def test_station_names_with_underscores_and_any_dates(tmp_path: Path):
    write_station(tmp_path, "New_Site", start="2017-02-27 22:00", hours=5)
    write_table(tmp_path, ["New_Site"])
    ds = read_stations(tmp_path)
    assert ds["station"].values.tolist() == ["New_Site"]
    assert ds["time"].values[0] == np.datetime64("2017-02-27T14:00")
    assert ds["time"].values[-1] == np.datetime64("2017-02-27T18:00")  # local 2017-02-28 02:00


@pytest.mark.real_data
def test_real_beijing_data():
    d = shared_data_dir() / "beijing"
    if not (d / "stations.csv").is_file():
        pytest.skip(f"real data not found at {d}")
    t0 = time.perf_counter()
    ds = read_stations(d)
    elapsed = time.perf_counter() - t0
    assert elapsed < 15.0
    assert ds.sizes["station"] == 10 and ds.sizes["time"] == 26304
    assert ds["time"].values[0] == np.datetime64("2013-02-28T16:00")
    assert ds["time"].values[-1] == np.datetime64("2016-02-29T15:00")
    first = ds.sel(station="Aotizhongxin").isel(time=0)
    assert float(first["pm25"]) == 4.0 and float(first["co"]) == 300.0 and float(first["sp"]) == 1023.0
    # NNW at 4.4 m/s blows from 337.5 deg: towards SSE -> u > 0, v < 0
    assert float(first["u10"]) == pytest.approx(4.4 * np.sin(np.deg2rad(22.5)), abs=1e-4)
    assert float(first["v10"]) == pytest.approx(-4.4 * np.cos(np.deg2rad(22.5)), abs=1e-4)
    assert 0.0 < float(ds["pm25"].isnull().mean()) < 0.05
    assert float(ds["rh"].max()) <= 100.0 and float(ds["rh"].min()) >= 0.0
    assert len(json.loads(ds.attrs["sources"])) == 10


def test_quoted_fields_crlf_and_blank_lines(tmp_path: Path):
    (tmp_path / "stations.csv").write_text('station,name,lon,lat\n"Alpha","Olympic, centre",116.4,39.9\n')
    head = ",".join(f'"{c}"' for c in COLS.split(","))
    rows = ['1,2013,3,1,0,4.0,4.0,4.0,7.0,300.0,77.0,-0.7,1023.0,-18.8,0.0,"NNW",4.4,"Alpha"', "",
            "3,2013,3,1,2,NA,4.0,4.0,7.0,300.0,77.0,-0.7,1023.0,-18.8,0.0,cv,0,Alpha"]
    (tmp_path / "PRSA_Data_Alpha_x.csv").write_bytes(("\r\n".join([head, *rows]) + "\r\n").encode())
    ds = read_stations(tmp_path)
    assert ds.sizes["time"] == 3 and float(ds["pm10"][0, 0]) == 4.0
    assert np.isnan(ds["pm25"][0, 1]) and np.isnan(ds["pm25"][0, 2]) and float(ds["u10"][0, 2]) == 0.0


def test_domain_accepts_inside(two_stations: Path):
    ds = read_stations(two_stations, domain=(115.0, 118.0, 39.0, 41.0))
    assert ds.sizes["station"] == 2
