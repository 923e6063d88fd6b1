"""Bad inputs raise one DataError naming file, row and column; every problem of a file is reported."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from features.errors import DataError, MissingInputError, OutOfDomainError, UnitsError
from features.readers import (
    read_elevation_npy,
    read_emission_totals,
    read_emissions,
    read_meteorology,
    read_static,
    read_stations,
)

HEADER = "No,year,month,day,hour,PM2.5,PM10,SO2,NO2,CO,O3,TEMP,PRES,DEWP,RAIN,wd,WSPM,station"
A = "PRSA_Data_Alpha_20130301-20130302.csv"
B = "PRSA_Data_Beta_20130301-20130302.csv"


def good_rows(name: str, hours: int = 30) -> list[str]:
    t = pd.date_range("2013-03-01", periods=hours, freq="h")
    return [HEADER] + [f"{i + 1},{ts.year},{ts.month},{ts.day},{ts.hour},{10 + i},{20 + i},5,30,500,40,"
                       f"{5 + 0.1 * i:.1f},1015.0,-3.0,0.0,NE,1.5,{name}" for i, ts in enumerate(t)]


def setup(d: Path) -> None:
    (d / A).write_text("\n".join(good_rows("Alpha")) + "\n")
    (d / B).write_text("\n".join(good_rows("Beta")) + "\n")
    (d / "stations.csv").write_text("station,cnemc_id,lon,lat\nAlpha,1A,116.4,39.9\nBeta,2A,116.5,40.0\n")


def edit(d: Path, file: str, line: int, col: str, value: str) -> None:
    """Set field `col` of file line `line` (header = line 1)."""
    lines = (d / file).read_text().splitlines()
    cols = lines[0].split(",")
    parts = lines[line - 1].split(",")
    parts[cols.index(col)] = value
    lines[line - 1] = ",".join(parts)
    (d / file).write_text("\n".join(lines) + "\n")


def write_nc(d: Path, name: str, ds: xr.Dataset) -> Path:
    ds.to_netcdf(d / name, engine="h5netcdf")
    return d / name


def small_grid(**vars_: tuple) -> xr.Dataset:
    return xr.Dataset(vars_, coords={"latitude": [39.5, 40.0], "longitude": [116.0, 116.5, 117.0]})


T = pd.date_range("2020-01-01", periods=3, freq="h")


def m_text(file: str, text: str | bytes) -> Callable[[Path], None]:
    def f(d: Path) -> None:
        (d / file).write_bytes(text if isinstance(text, bytes) else text.encode())
    return f


def m_edit(file: str, line: int, col: str, value: str) -> Callable[[Path], None]:
    return lambda d: edit(d, file, line, col, value)


def m_no_time_nc(d: Path) -> None:
    write_nc(d, "meteorology.nc", small_grid(t2m=(("latitude", "longitude"), np.zeros((2, 3)), {"units": "K"})))


def m_nc(name: str, ds_fn: Callable[[], xr.Dataset]) -> Callable[[Path], None]:
    return lambda d: write_nc(d, name, ds_fn())


def met3(var: str = "t2m", units: str = "K", lat=(39.5, 40.0)) -> xr.Dataset:
    return xr.Dataset({var: (("time", "latitude", "longitude"), np.full((3, 2, 3), 280.0), {"units": units})},
                      coords={"time": T, "latitude": list(lat), "longitude": [116.0, 116.5, 117.0]})


def emis_bad_profile() -> xr.Dataset:
    return xr.Dataset({"emis_nox": (("sector", "latitude", "longitude"), np.ones((1, 2, 3)), {"units": "kg km-2 h-1"}),
                       "profile_hour": (("sector", "hour"), np.ones((1, 23)))},
                      coords={"latitude": [39.5, 40.0], "longitude": [116.0, 116.5, 117.0]})


stations = read_stations
met = lambda d: read_meteorology(d / "meteorology.nc")
CASES = [
    # id, mutate, reader, error class, fragments the message must contain
    ("bad_number", m_edit(A, 17, "PM2.5", "abc"), stations, DataError,
     [A, "row 17", "column 'PM2.5'", "'abc' is not a number"]),
    ("missing_column", lambda d: (d / A).write_text((d / A).read_text().replace(",O3,", ",OZONE,", 1)), stations,
     DataError, [A, "row 1", "missing column(s) ['O3']"]),
    ("empty_file", m_text(A, ""), stations, DataError, [A, "file is empty"]),
    ("header_only", m_text(A, HEADER + "\n"), stations, DataError, [A, "no data rows"]),
    ("semicolon_delimiter", lambda d: (d / A).write_text((d / A).read_text().replace(",", ";")), stations,
     DataError, [A, "row 1", "wrong delimiter", "semicolon"]),
    ("not_utf8", lambda d: (d / "stations.csv").write_bytes(
        "station,name,lon,lat\nAlpha,奥体,116.4,39.9\nBeta,b,116.5,40.0\n".encode("gbk")), stations, DataError,
     ["stations.csv", "row 2", "not valid UTF-8"]),
    ("duplicate_timestamp", m_edit(A, 6, "hour", "3"), stations, DataError,
     [A, "row 6", "column 'hour'", "duplicate timestamp 2013-03-01 03:00", "first at row 5"]),
    ("hour_24", m_edit(A, 9, "hour", "24"), stations, DataError, [A, "row 9", "column 'hour'", "hour 24"]),
    ("invalid_date", lambda d: (edit(d, A, 4, "month", "2"), edit(d, A, 4, "day", "30")), stations, DataError,
     [A, "row 4", "invalid date 2013-02-30"]),
    ("non_integer_hour", m_edit(A, 3, "hour", "1.5"), stations, DataError, [A, "row 3", "column 'hour'", "whole"]),
    ("missing_time_field", m_edit(B, 8, "year", ""), stations, DataError, [B, "row 8", "column 'year'", "missing"]),
    ("unknown_compass", m_edit(A, 12, "wd", "NXE"), stations, DataError,
     [A, "row 12", "column 'wd'", "unknown wind direction 'NXE'"]),
    ("negative_wind_speed", m_edit(B, 20, "WSPM", "-1.2"), stations, DataError,
     [B, "row 20", "column 'WSPM'", "negative"]),
    ("mixed_stations", m_edit(A, 10, "station", "Beta"), stations, DataError,
     [A, "row 10", "column 'station'", "mixes stations"]),
    ("station_not_in_table", lambda d: (d / "stations.csv").write_text("station,lon,lat\nAlpha,116.4,39.9\n"),
     stations, DataError, [B, "'Beta' is not listed in stations.csv"]),
    ("lon_out_of_range", lambda d: (d / "stations.csv").write_text(
        "station,lon,lat\nAlpha,216.4,39.9\nBeta,116.5,40.0\n"), stations, DataError,
     ["stations.csv", "row 2", "column 'lon'", "216.4 is outside"]),
    ("lat_not_number", lambda d: (d / "stations.csv").write_text(
        "station,lon,lat\nAlpha,116.4,39.9\nBeta,116.5,40,0\n"), stations, DataError,
     ["stations.csv", "row 3", "expected 3 fields, found 4"]),
    ("stations_csv_missing", lambda d: (d / "stations.csv").unlink(), stations, MissingInputError,
     ["stations.csv not found"]),
    ("temp_in_kelvin", lambda d: [edit(d, A, i, "TEMP", "283.1") for i in range(2, 32)], stations, DataError,
     [A, "column 'TEMP'", "wrong units"]),
    ("ragged_row", lambda d: (d / A).write_text((d / A).read_text().replace("1.5,Alpha\n", "1.5,Alpha,extra\n", 1)),
     stations, DataError, [A, "row 2", "expected 18 fields, found 19"]),
    ("station_name_mismatch", lambda d: (d / A).write_text((d / A).read_text().replace(",Alpha", ",Alfa")),
     stations, DataError, [A, "'Alfa' does not match the file name"]),
    ("duplicate_station_in_table", lambda d: (d / "stations.csv").write_text(
        "station,lon,lat\nAlpha,116.4,39.9\nBeta,116.5,40.0\nAlpha,116.4,39.9\n"), stations, DataError,
     ["stations.csv", "row 4", "listed more than once"]),
    ("no_station_files", lambda d: [(d / f).unlink() for f in (A, B)], stations, MissingInputError,
     ["no PRSA_Data_<station>_*.csv files"]),
    ("domain", lambda d: None, lambda d: read_stations(d, domain=(100.0, 116.45, 30.0, 45.0)), DataError,
     ["stations.csv", "row 3", "column 'lon'", "outside the allowed domain"]),
    ("netcdf_without_time", m_no_time_nc, met, DataError, ["meteorology.nc", "has no 'time'"]),
    ("netcdf_corrupt", m_text("meteorology.nc", b"\x89HDF\r\n\x1a\n" + b"\x00garbage" * 50), met, DataError,
     ["meteorology.nc", "cannot read as NetCDF"]),
    ("netcdf_empty", m_text("meteorology.nc", b""), met, DataError, ["meteorology.nc", "empty"]),
    ("netcdf_no_known_vars", m_nc("meteorology.nc", lambda: met3("temperature")), met, MissingInputError,
     ["meteorology.nc", "none of the meteorology variables", "temperature"]),
    ("netcdf_wrong_units", m_nc("meteorology.nc", lambda: met3("t2m", "degF")), met, UnitsError,
     ["meteorology.nc", "column 't2m'", "'degF'"]),
    ("netcdf_lat_out_of_range", m_nc("meteorology.nc", lambda: met3(lat=(89.5, 95.0))), met, DataError,
     ["meteorology.nc", "latitude", "outside [-90, 90]"]),
    ("emission_profile_length", m_nc("emissions.nc", emis_bad_profile), lambda d: read_emissions(d / "emissions.nc"),
     DataError, ["emissions.nc", "column 'profile_hour'", "hour=24"]),
    ("static_wrong_units", m_nc("static.nc", lambda: small_grid(elevation=(("latitude", "longitude"),
                                                                           np.zeros((2, 3)), {"units": "ft"}))),
     lambda d: read_static(d / "static.nc"), UnitsError, ["static.nc", "'elevation'", "'ft'"]),
    ("elevation_npy_corrupt", m_text("e.npy", b"not a numpy file"), lambda d: read_elevation_npy(d / "e.npy"),
     DataError, ["e.npy", "cannot read as a NumPy"]),
    ("emission_totals_bad_number", m_text("t.csv", "species,year,sector,emission_tg\nSO2,2013,Power,x1\n"),
     lambda d: read_emission_totals(d / "t.csv"), DataError, ["t.csv", "row 2", "column 'emission_tg'", "'x1'"]),
]


@pytest.mark.parametrize("mutate,reader,cls,fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed(tmp_path: Path, mutate, reader, cls, fragments):
    setup(tmp_path)
    mutate(tmp_path)
    with pytest.raises(cls) as e:
        reader(tmp_path)
    assert isinstance(e.value, DataError)
    msg = str(e.value)
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in:\n{msg}"


def test_all_problems_of_all_files_collected(tmp_path: Path):
    setup(tmp_path)
    edit(tmp_path, A, 3, "PM10", "x")
    edit(tmp_path, A, 5, "wd", "Q")
    edit(tmp_path, B, 7, "hour", "24")
    with pytest.raises(DataError) as e:
        read_stations(tmp_path)
    where = [(p.file, p.row, p.column) for p in e.value.problems]
    assert (A, 3, "PM10") in where and (A, 5, "wd") in where and (B, 7, "hour") in where


def test_problems_capped_per_file(tmp_path: Path):
    setup(tmp_path)
    (tmp_path / A).write_text((tmp_path / A).read_text().replace(",NE,", ",XX,"))
    with pytest.raises(DataError) as e:
        read_stations(tmp_path)
    probs = [p for p in e.value.problems if p.file == A]
    assert len(probs) == 21 and probs[-1].message == "… and 10 more problems"


def test_missing_values_are_fine(tmp_path: Path):
    setup(tmp_path)
    edit(tmp_path, A, 5, "PM2.5", "NA")
    edit(tmp_path, A, 6, "TEMP", "")
    ds = read_stations(tmp_path)
    assert np.isnan(ds["pm25"].sel(station="Alpha").values[3])


def test_out_of_domain_class_is_data_error():
    assert issubclass(OutOfDomainError, DataError) and issubclass(UnitsError, DataError)


def test_station_listed_without_file_is_left_out_and_said(tmp_path: Path, caplog):
    """stations.csv may be a catalogue listing more stations than the directory holds (some held back): the
    stations with files are read, the others named in a warning and in attrs, nothing fails."""
    import json
    import logging

    setup(tmp_path)
    (tmp_path / "stations.csv").write_text("station,lon,lat\nAlpha,116.4,39.9\nBeta,116.5,40.0\nGamma,116.6,40.1\n")
    with caplog.at_level(logging.WARNING, logger="aqcast.features"):
        ds = read_stations(tmp_path)
    assert list(ds["station"].values) == ["Alpha", "Beta"]
    assert json.loads(ds.attrs["listed_without_file"]) == ["Gamma"]
    assert "left out: Gamma" in caplog.text and "PRSA_Data_<station>_*.csv" in caplog.text
