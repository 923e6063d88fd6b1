"""Station observations in the UCI "Beijing Multi-Site Air-Quality" layout.

Public API:
    read_stations(directory, *, utc_offset="+08:00", domain=None) -> xr.Dataset
    read_station_table(path, *, domain=None) -> pandas.DataFrame   (index station; columns lon, lat, ...)

Layout: `PRSA_Data_<station>_<anything>.csv` (several files per station are concatenated) + `stations.csv`.
Times are local (`utc_offset`, never guessed) and stored as UTC. Row numbers in messages are line numbers in
the file (header = line 1). Empty fields and "NA" are missing values, not errors.
Wind: `wd` (16-point compass, direction the wind blows FROM) + `WSPM` -> u10, v10. `cv` (calm/variable) or a
missing `wd`: u10 = v10 = 0 when WSPM == 0, NaN otherwise (speed known, direction not); `ws` is always WSPM.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from features.errors import DataError, MissingInputError, Problem
from features.units import COMPASS16, INTERNAL_UNITS, parse_utc_offset, relative_humidity, wind_components

MAX_PROBLEMS_PER_FILE = 20
PREFIX = "PRSA_Data_"
TIME_COLS = ["year", "month", "day", "hour"]
# source column -> internal name (values already in internal units, see docs/architecture.md)
VALUE_COLS = {"PM2.5": "pm25", "PM10": "pm10", "SO2": "so2", "NO2": "no2", "CO": "co", "O3": "o3",
              "TEMP": "t2m", "PRES": "sp", "DEWP": "d2m", "RAIN": "tp", "WSPM": "ws"}
REQUIRED = TIME_COLS + list(VALUE_COLS) + ["wd", "station"]
OUTPUT_VARS = ["pm25", "pm10", "so2", "no2", "co", "o3", "t2m", "d2m", "sp", "tp", "ws", "u10", "v10", "rh"]
CALM = {"CV", "C", "CALM"}
NA_VALUES = ["", "NA", "N/A", "NaN", "nan", "null", "NULL"]


class _Problems:
    """Problems of one file, capped at MAX_PROBLEMS_PER_FILE with an '… and N more' line."""

    def __init__(self, file: str):
        self.file, self.items, self.dropped = file, [], 0

    def add(self, message: str, row: int | None = None, column: str | None = None) -> None:
        if len(self.items) < MAX_PROBLEMS_PER_FILE:
            self.items.append(Problem(message, file=self.file, row=row, column=column))
        else:
            self.dropped += 1

    def final(self) -> list[Problem]:
        more = [Problem(f"… and {self.dropped} more problems", file=self.file)] if self.dropped else []
        return self.items + more


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _decode(data: bytes, probs: _Problems) -> str | None:
    """UTF-8 (BOM allowed) text, or None after recording where decoding failed."""
    if not data.strip():
        probs.add("file is empty")
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        probs.add(f"not valid UTF-8 text (byte 0x{data[e.start]:02x}); save the file as UTF-8", row=line)
        return None


def _read_table(text: str, required: list[str], probs: _Problems) -> pd.DataFrame | None:
    """Parse comma-separated text as strings; checks delimiter, columns and field counts."""
    lines = text.splitlines()
    header = lines[0]
    cols = [c.strip() for c in next(csv.reader([header]))] if header.strip() else [""]
    if len(cols) == 1 or not set(required) & set(cols):
        for sep, name in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe")):
            if sep in header and set(required) & {c.strip().strip('"') for c in header.split(sep)}:
                probs.add(f"wrong delimiter: columns are separated by {name} ({sep!r}); expected comma", row=1)
                return None
    missing = [c for c in required if c not in cols]
    if missing:
        probs.add(f"missing column(s) {missing}; header is {cols}", row=1)
        return None
    if len(set(cols)) != len(cols):
        probs.add(f"duplicate column names in header {cols}", row=1)
        return None
    if len(lines) < 2 or not any(ln.strip() for ln in lines[1:]):
        probs.add("file has a header but no data rows")
        return None
    if '"' in text:  # quoted fields may hold commas: count fields properly (slow path, rare)
        counts = np.array([len(r) if r else 1 for r in csv.reader(lines)], dtype=np.int64)
    else:
        counts = np.fromiter((ln.count(",") + 1 for ln in lines), dtype=np.int64, count=len(lines))
    blank = np.fromiter((not ln.strip() for ln in lines), dtype=bool, count=len(lines))
    for i in np.flatnonzero((counts != len(cols)) & ~blank):
        probs.add(f"expected {len(cols)} fields, found {counts[i]}", row=int(i) + 1)
    good = np.flatnonzero((counts == len(cols)) & ~blank)
    good = good[good > 0]  # data lines with the right field count (0-based indices)
    if len(good) < len(lines) - 1:  # rare path: drop reported/blank lines before parsing
        text = "\n".join([header] + [lines[i] for i in good])
    df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=NA_VALUES,
                     index_col=False, engine="c")
    df.columns = [c.strip() for c in df.columns]
    df["_row"] = good[: len(df)] + 1 if len(df) <= len(good) else np.arange(len(df)) + 2  # header = line 1
    return df


def _numeric(df: pd.DataFrame, col: str, probs: _Problems) -> np.ndarray:
    """Column as float64; cells that are present but not numbers are reported (row, column, value)."""
    raw = df[col]
    num = pd.to_numeric(raw.str.strip(), errors="coerce")
    bad = num.isna() & raw.notna()
    for r, v in zip(df.loc[bad, "_row"], raw[bad]):
        probs.add(f"{v!r} is not a number", row=int(r), column=col)
    return num.to_numpy(dtype=np.float64)


def read_station_table(path: str | Path, *, domain: tuple[float, float, float, float] | None = None
                       ) -> pd.DataFrame:
    """`stations.csv` -> DataFrame indexed by station with float lon, lat (+ extra columns as text).

    `domain` = (lon_min, lon_max, lat_min, lat_max) rejects stations outside it."""
    path = Path(path)
    probs = _Problems(path.name)
    if not path.is_file():
        raise MissingInputError(Problem("stations.csv not found (needs columns station, lon, lat)", file=str(path)))
    text = _decode(path.read_bytes(), probs)
    df = _read_table(text, ["station", "lon", "lat"], probs) if text is not None else None
    if df is not None:
        names = df["station"].str.strip()
        for r in df.loc[names.isna() | (names == ""), "_row"]:
            probs.add("station name is empty", row=int(r), column="station")
        for r, n in zip(df.loc[names.duplicated(keep="first"), "_row"], names[names.duplicated(keep="first")]):
            probs.add(f"station {n!r} is listed more than once", row=int(r), column="station")
        lon, lat = _numeric(df, "lon", probs), _numeric(df, "lat", probs)
        bounds = {"lon": (-180.0, 180.0), "lat": (-90.0, 90.0)}
        if domain is not None:
            bounds = {"lon": (domain[0], domain[1]), "lat": (domain[2], domain[3])}
        for col, vals in (("lon", lon), ("lat", lat)):
            what = "the allowed domain" if domain is not None else "the valid range"
            for r in df["_row"][np.isnan(vals) & df[col].isna().to_numpy()]:
                probs.add("coordinate is missing", row=int(r), column=col)
            out = ~np.isnan(vals) & ((vals < bounds[col][0]) | (vals > bounds[col][1]))
            for r, v in zip(df["_row"][out], vals[out]):
                probs.add(f"{v} is outside {what} {list(bounds[col])}", row=int(r), column=col)
    if probs.final():
        raise DataError(probs.final())
    df["station"] = names
    df["lon"], df["lat"] = lon, lat
    return df.drop(columns="_row").set_index("station")


def _station_from_name(path: Path) -> str:
    stem = path.name[len(PREFIX):-len(".csv")]
    return stem.rsplit("_", 1)[0] if "_" in stem else stem


def _parse_station_file(path: Path, data: bytes, probs: _Problems, offset: pd.Timedelta,
                        expected_station: str) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """One UCI CSV -> (UTC times as int64 minutes since epoch, {internal var: float64 values})."""
    text = _decode(data, probs)
    df = _read_table(text, REQUIRED, probs) if text is not None else None
    if df is None:
        return None
    rows = df["_row"].to_numpy()
    # station names: one per file, matching the file name
    st = df["station"].str.strip()
    for r in rows[st.isna().to_numpy()][:3]:
        probs.add("station name is empty", row=int(r), column="station")
    names = pd.unique(st.dropna())
    if len(names) > 1:
        counts = st.value_counts()
        minority = st.notna() & (st != counts.index[0])
        probs.add(f"file mixes stations {sorted(names.tolist())}; one station per file",
                  row=int(rows[minority.to_numpy()][0]), column="station")
    elif len(names) == 1 and names[0] != expected_station:
        probs.add(f"station {names[0]!r} does not match the file name (station {expected_station!r})",
                  row=int(rows[0]), column="station")
    # time: integers, valid calendar dates, hour 0-23
    parts = {c: _numeric(df, c, probs) for c in TIME_COLS}
    ok = np.ones(len(df), dtype=bool)
    for c, v in parts.items():
        miss = np.isnan(v) & df[c].isna().to_numpy()
        for r in rows[miss]:
            probs.add("time field is missing", row=int(r), column=c)
        frac = ~np.isnan(v) & (v != np.round(v))
        for r, x in zip(rows[frac], v[frac]):
            probs.add(f"{x} is not a whole number", row=int(r), column=c)
        ok &= ~np.isnan(v) & ~frac
    hour = parts["hour"]
    bad_hour = ok & ((hour < 0) | (hour > 23))
    for r, x in zip(rows[bad_hour], hour[bad_hour]):
        probs.add(f"hour {x:g} is outside 0-23" + (" (use hour 0 of the next day)" if x == 24 else ""),
                  row=int(r), column="hour")
    ok &= ~bad_hour
    fill = {c: np.where(ok, parts[c], 2000 if c == "year" else 1).astype(np.int64) for c in TIME_COLS}
    local = pd.to_datetime(pd.DataFrame({"year": fill["year"], "month": fill["month"], "day": fill["day"],
                                         "hour": np.where(ok, parts["hour"], 0).astype(np.int64)}),
                           errors="coerce")
    bad_date = ok & local.isna().to_numpy()
    for i in np.flatnonzero(bad_date):
        probs.add(f"invalid date {fill['year'][i]}-{fill['month'][i]:02d}-{fill['day'][i]:02d}",
                  row=int(rows[i]), column="day")
    ok &= ~bad_date
    utc = (local - offset).to_numpy(dtype="datetime64[m]").astype(np.int64)  # minutes since epoch
    dup = pd.Series(utc).duplicated(keep=False).to_numpy() & ok
    if dup.any():
        first: dict[int, int] = {}
        for i in np.flatnonzero(dup):
            if utc[i] in first:
                probs.add(f"duplicate timestamp {local.iloc[i]:%Y-%m-%d %H:00} (local), first at row {first[utc[i]]}",
                          row=int(rows[i]), column="hour")
            else:
                first[utc[i]] = int(rows[i])
    # values
    out = {VALUE_COLS[c]: _numeric(df, c, probs) for c in VALUE_COLS}
    ws = out["ws"]
    neg = ws < 0
    for r, x in zip(rows[neg], ws[neg]):
        probs.add(f"wind speed {x:g} is negative", row=int(r), column="WSPM")
    wd = df["wd"].str.strip().str.upper()
    deg = wd.map(COMPASS16).to_numpy(dtype=np.float64)
    unknown = wd.notna().to_numpy() & np.isnan(deg) & ~wd.isin(CALM).to_numpy()
    for r, x in zip(rows[unknown], df["wd"][unknown]):
        probs.add(f"unknown wind direction {x!r} (expected a 16-point compass direction N, NNE, …, or 'cv')",
                  row=int(r), column="wd")
    _check_units(out, probs)
    if probs.items:
        return None
    u, v = wind_components(ws, deg)
    calm0 = np.isnan(deg) & (ws == 0)
    u[calm0], v[calm0] = 0.0, 0.0
    out["u10"], out["v10"] = u, v
    out["rh"] = relative_humidity(out["t2m"], out["d2m"])
    return utc, out


def _check_units(out: dict[str, np.ndarray], probs: _Problems) -> None:
    """Catch whole columns in the wrong unit (Kelvin, Pa) — the UCI layout has no unit row."""
    checks = {"TEMP": ("t2m", -70, 60, "degC"), "DEWP": ("d2m", -90, 50, "degC"), "PRES": ("sp", 300, 1100, "hPa")}
    for col, (var, lo, hi, unit) in checks.items():
        v = out[var][~np.isnan(out[var])]
        if v.size and not lo <= float(np.median(v)) <= hi:
            probs.add(f"median {np.median(v):g} is not plausible in {unit} (wrong units?)", column=col)


def read_stations(directory: str | Path, *, utc_offset: str = "+08:00",
                  domain: tuple[float, float, float, float] | None = None) -> xr.Dataset:
    """Read every `PRSA_Data_*.csv` + `stations.csv` in `directory` into a `(station, time)` Dataset.

    Time is hourly, continuous, UTC (missing hours are NaN). Collects all problems of all files into one
    DataError. `domain` = (lon_min, lon_max, lat_min, lat_max) optionally restricts station coordinates."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MissingInputError(Problem("data directory not found", file=str(directory)))
    offset = parse_utc_offset(utc_offset)
    files = sorted(directory.glob(f"{PREFIX}*.csv"))
    if not files:
        raise MissingInputError(Problem(f"no {PREFIX}<station>_*.csv files found", file=str(directory)))
    problems: list[Problem] = []
    table = None
    if not (directory / "stations.csv").is_file():
        raise MissingInputError(Problem("stations.csv not found (needs columns station, lon, lat)",
                                        file=str(directory / "stations.csv")))
    try:
        table = read_station_table(directory / "stations.csv", domain=domain)
    except DataError as e:
        problems += e.problems
    sources, parsed = [], {}
    for f in files:
        data = f.read_bytes()
        sources.append({"path": str(f.resolve()), "sha256": _sha256(data)})
        probs = _Problems(f.name)
        name = _station_from_name(f)
        if table is not None and name not in table.index:
            probs.add(f"station {name!r} is not listed in stations.csv")
        res = _parse_station_file(f, data, probs, offset, name)
        problems += probs.final()
        if res is not None:
            parsed.setdefault(name, []).append((f.name, res))
    if problems:
        raise DataError(problems)
    ds = _assemble(parsed, table, utc_offset, sources)
    unused = sorted(set(table.index) - {_station_from_name(f) for f in files})
    if unused:  # a catalogue may list more stations than the directory holds (e.g. some held back): not an error
        ds.attrs["listed_without_file"] = json.dumps(unused)
        logging.getLogger("aqcast.features").warning(
            f"stations.csv lists {len(unused)} station{'s' if len(unused) > 1 else ''} with no {PREFIX}<station>_*.csv "
            f"file in {directory}, left out: {', '.join(unused)}")
    return ds


def _assemble(parsed: dict, table: pd.DataFrame, utc_offset: str, sources: list[dict]) -> xr.Dataset:
    stations = sorted(parsed)
    per_station: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
    problems: list[Problem] = []
    for s in stations:
        minutes = np.concatenate([r[1][0] for r in parsed[s]])
        vals = {k: np.concatenate([r[1][1][k] for r in parsed[s]]) for k in OUTPUT_VARS}
        uniq, idx = np.unique(minutes, return_index=True)
        if len(uniq) != len(minutes):  # overlap between two files of the same station
            dup = np.setdiff1d(np.arange(len(minutes)), idx)
            problems.append(Problem(f"{len(dup)} timestamps of station {s!r} appear in more than one file "
                                    f"({', '.join(r[0] for r in parsed[s])}), e.g. "
                                    f"{np.datetime64(int(minutes[dup[0]]), 'm')} UTC"))
        per_station[s] = (minutes, vals)
    if problems:
        raise DataError(problems)
    t0 = min(int(h.min()) for h, _ in per_station.values())
    t1 = max(int(h.max()) for h, _ in per_station.values())
    nt = (t1 - t0) // 60 + 1
    time = (np.arange(t0, t1 + 1, 60, dtype=np.int64).astype("datetime64[m]")).astype("datetime64[ns]")
    data = {k: np.full((len(stations), nt), np.nan, dtype=np.float32) for k in OUTPUT_VARS}
    for i, s in enumerate(stations):
        minutes, vals = per_station[s]
        for k in OUTPUT_VARS:
            data[k][i, (minutes - t0) // 60] = vals[k]
    ds = xr.Dataset(
        {k: (("station", "time"), data[k], {"units": INTERNAL_UNITS[k]}) for k in OUTPUT_VARS},
        coords={"station": np.array(stations, dtype=str), "time": time,
                "lon": ("station", table.loc[stations, "lon"].to_numpy(np.float64), {"units": "degrees_east"}),
                "lat": ("station", table.loc[stations, "lat"].to_numpy(np.float64), {"units": "degrees_north"})},
        attrs={"source_utc_offset": utc_offset, "sources": json.dumps(sources),
               "wind_convention": "u10/v10 towards east/north; wd 'cv' or missing: 0 if WSPM==0 else NaN",
               "rh": "Magnus formula from t2m and d2m, clipped to [0, 100]"})
    ds["time"].attrs["timezone"] = "UTC"
    return ds
