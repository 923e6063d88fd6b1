"""Gridded NetCDF inputs (h5netcdf engine): meteorology, satellite, emissions.

Public API:
    read_meteorology(path) -> xr.Dataset   t2m d2m sp u10 v10 tp blh ssr (+ ws, rh when derivable), internal units
    read_satellite(path) -> xr.Dataset     aod, no2col (NaN = cloud gap) at overpass times
    read_emissions(path) -> EmissionInventory   annual maps + profiles; `.hourly(times)` -> emis_<s>(time, ...)
    read_static(path) -> xr.Dataset        `elevation` (m), no time dimension (also in features.readers.static)
    EmissionInventory.hourly(times, utc_offset=None) -> xr.Dataset
    open_netcdf(path) -> xr.Dataset        loaded into memory; missing/corrupt files -> DataError
    normalise_grid(ds, file) -> xr.Dataset regular (latitude, longitude) ascending, or (y, x) with 2-D lon/lat

Grids: dims `(…, latitude, longitude)` (also `lat`/`lon`, renamed) or `(…, y, x)` with 2-D `lon`, `lat`
coordinates. Times are UTC. Known variables that are absent are listed in attrs `missing` (JSON list) — never a
crash — but a file with none of them is a DataError. Unknown/missing `units` -> UnitsError naming file and
variable. attrs `sources` = JSON [{path, sha256}].
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from features.errors import DataError, MissingInputError, Problem, UnitsError
from features.units import INTERNAL_UNITS, convert, parse_utc_offset, relative_humidity

# source name -> internal name (first match wins: ERA5's `ssrd` is the downward flux)
MET_VARS = {"t2m": "t2m", "d2m": "d2m", "sp": "sp", "u10": "u10", "v10": "v10", "tp": "tp", "blh": "blh",
            "ssrd": "ssr"}
SAT_VARS = {"aod": "aod", "no2col": "no2col"}
EMIS_VARS = {f"emis_{s}": f"emis_{s}" for s in ("nox", "so2", "voc", "nh3", "pm25")}
STATIC_VARS = {"elevation": "elevation"}
ELEV_RANGE = (-500.0, 9000.0)
PROFILES = {"profile_hour": ("hour", 24), "profile_weekday": ("weekday", 7), "profile_month": ("month", 12)}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def open_netcdf(path: str | Path, what: str = "NetCDF") -> xr.Dataset:
    """Open and load a NetCDF file; missing or unreadable files raise DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(Problem(f"{what} file not found", file=str(path)))
    if path.stat().st_size == 0:
        raise DataError(Problem("file is empty (0 bytes); expected NetCDF-4", file=str(path)))
    try:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            ds = ds.load()
    except Exception as e:  # noqa: BLE001 - h5py/xarray raise many types on corrupt input
        raise DataError(Problem(f"cannot read as NetCDF-4/HDF5 ({type(e).__name__}: {e}); file corrupt or "
                                "not NetCDF", file=str(path))) from None
    ds.attrs["sources"] = json.dumps([{"path": str(path.resolve()), "sha256": _sha256(path)}])
    return ds


def normalise_grid(ds: xr.Dataset, file: str) -> xr.Dataset:
    """Regular grids -> dims (latitude, longitude), ascending, lon in [-180, 180); curvilinear grids keep
    (y, x) and need 2-D `lon`, `lat` coordinates. Coordinates outside the valid range -> OutOfDomain problem."""
    ren = {k: v for k, v in (("lat", "latitude"), ("lon", "longitude")) if k in ds.dims}
    ds = ds.rename(ren)
    problems: list[Problem] = []
    if "latitude" in ds.dims and "longitude" in ds.dims:
        lat, lon = ds["latitude"].values.astype(float), ds["longitude"].values.astype(float)
        if (np.abs(lat) > 90).any() or np.isnan(lat).any():
            problems.append(Problem(f"latitude values {lat.min()}..{lat.max()} outside [-90, 90]", file,
                                    column="latitude"))
        if (lon < -180).any() or (lon > 360).any() or np.isnan(lon).any():
            problems.append(Problem(f"longitude values {lon.min()}..{lon.max()} outside [-180, 360]", file,
                                    column="longitude"))
        if problems:
            raise DataError(problems)
        if (lon >= 180).any():
            ds = ds.assign_coords(longitude=((lon + 180) % 360) - 180)
        ds = ds.sortby(["latitude", "longitude"])
        for c, u in (("latitude", "degrees_north"), ("longitude", "degrees_east")):
            ds[c].attrs["units"] = u
        return ds
    if "y" in ds.dims and "x" in ds.dims:
        for c, lim in (("lon", 360), ("lat", 90)):
            if c not in ds.variables or ds[c].dims != ("y", "x"):
                problems.append(Problem(f"curvilinear grid (y, x) needs a 2-D coordinate {c!r}(y, x)", file,
                                        column=c))
                continue
            v = ds[c].values.astype(float)
            lo = -90 if c == "lat" else -180
            if np.isnan(v).any() or (v < lo).any() or (v > lim).any():
                problems.append(Problem(f"{c} values outside [{lo}, {lim}]", file, column=c))
        if problems:
            raise DataError(problems)
        return ds.set_coords(["lon", "lat"])
    raise DataError(Problem(f"no recognised grid: dims {dict(ds.sizes)}; expected (latitude, longitude) or "
                            "(y, x) with 2-D lon/lat", file))


def _check_time(ds: xr.Dataset, file: str) -> xr.Dataset:
    if "time" not in ds.dims:
        raise DataError(Problem("has no 'time' dimension/coordinate (expected UTC times)", file, column="time"))
    t = ds["time"]
    if not np.issubdtype(t.dtype, np.datetime64):
        raise DataError(Problem(f"time is not decodable as dates (dtype {t.dtype}, units "
                                f"{t.attrs.get('units', t.encoding.get('units'))!r})", file, column="time"))
    tv = pd.DatetimeIndex(t.values)
    problems = []
    if tv.isna().any():
        problems.append(Problem(f"{int(tv.isna().sum())} time values are missing (NaT)", file, column="time"))
    dup = tv[tv.duplicated()]
    if len(dup):
        problems.append(Problem(f"duplicate timestamps, e.g. {dup[0]:%Y-%m-%dT%H:%M}Z ({len(dup)} in all)", file,
                                column="time"))
    if problems:
        raise DataError(problems)
    ds = ds.sortby("time")
    ds["time"].attrs = {"timezone": "UTC"}
    return ds


def _convert_vars(ds: xr.Dataset, mapping: dict[str, str], file: str, kind: str,
                  spatial_ok: tuple[set[str], ...]) -> tuple[dict[str, xr.DataArray], list[str]]:
    """Known variables converted to internal units; all unit/shape problems raised together."""
    out: dict[str, xr.DataArray] = {}
    problems: list[Problem] = []
    for src, name in mapping.items():
        if src not in ds.data_vars or name in out:
            continue
        da = ds[src]
        if not any(set(da.dims) == s for s in spatial_ok):
            problems.append(Problem(f"variable has dims {da.dims}; expected one of "
                                    f"{[tuple(sorted(s)) for s in spatial_ok]}", file, column=src))
            continue
        try:
            vals = convert(da.values, da.attrs.get("units"), name, file=file, source_var=src)
        except UnitsError as e:
            problems += [Problem(p.message, file, column=src) for p in e.problems]
            continue
        out[name] = xr.DataArray(vals.astype(np.float32), dims=da.dims, coords=da.coords,
                                 attrs={"units": INTERNAL_UNITS[name], "source_variable": src,
                                        "source_units": str(da.attrs.get("units"))})
    if problems:
        raise (UnitsError if all("units" in p.message for p in problems) else DataError)(problems)
    if not out:
        raise MissingInputError(Problem(f"none of the {kind} variables {sorted(set(mapping))} found "
                                        f"(file has {sorted(map(str, ds.data_vars))})", file))
    missing = sorted({n for n in mapping.values() if n not in out})
    return out, missing


def _dims_options(ds: xr.Dataset, lead: str) -> tuple[set[str], ...]:
    sp = ({"latitude", "longitude"}, {"y", "x"})
    return tuple({lead, *s} for s in sp)


def _finish(ds_in: xr.Dataset, data: dict[str, xr.DataArray], missing: list[str], file: str) -> xr.Dataset:
    out = xr.Dataset(data)
    for c in ("lon", "lat"):
        if c in ds_in.coords and c not in out.coords:
            out = out.assign_coords({c: ds_in[c]})
    out.attrs = {"sources": ds_in.attrs["sources"], "missing": json.dumps(missing), "file": file}
    for k in ("synthetic", "seed", "generator"):
        if k in ds_in.attrs:
            out.attrs[k] = ds_in.attrs[k]
    return out


def _read_timed(path: str | Path, mapping: dict[str, str], kind: str) -> tuple[xr.Dataset, dict, list[str]]:
    file = Path(path).name
    raw = open_netcdf(path, kind)
    raw = _check_time(raw, file)
    raw = normalise_grid(raw, file)
    data, missing = _convert_vars(raw, mapping, file, kind, _dims_options(raw, "time"))
    return raw, data, missing


def read_meteorology(path: str | Path) -> xr.Dataset:
    """ERA5-style meteorology -> internal names/units; adds ws (and rh) when u10, v10 (t2m, d2m) present."""
    raw, data, missing = _read_timed(path, MET_VARS, "meteorology")
    if "u10" in data and "v10" in data:
        ws = np.hypot(data["u10"], data["v10"]).astype(np.float32)
        data["ws"] = ws.assign_attrs(units="m s-1", derived="hypot(u10, v10)")
    if "t2m" in data and "d2m" in data:
        rh = xr.apply_ufunc(relative_humidity, data["t2m"], data["d2m"]).astype(np.float32)
        data["rh"] = rh.assign_attrs(units="%", derived="Magnus formula from t2m, d2m")
    missing = [m for m in missing if m not in data] + [m for m in ("ws", "rh") if m not in data]
    return _finish(raw, data, missing, Path(path).name)


def read_satellite(path: str | Path) -> xr.Dataset:
    """Satellite retrievals (aod, no2col) at overpass times; NaN marks cloud gaps (kept as NaN)."""
    raw, data, missing = _read_timed(path, SAT_VARS, "satellite")
    return _finish(raw, data, missing, Path(path).name)


@dataclass
class EmissionInventory:
    """Annual-mean maps `emis_<s>(sector, <grid>)` and per-sector temporal profiles (mean 1).

    Profiles are indexed by UTC hour/weekday (0 = Monday)/month (0 = January) unless `utc_offset` (file attr
    `profile_utc_offset`) says they are local."""

    maps: xr.Dataset
    profile_hour: np.ndarray  # (sector, 24)
    profile_weekday: np.ndarray  # (sector, 7)
    profile_month: np.ndarray  # (sector, 12)
    utc_offset: str = "+00:00"
    missing: tuple[str, ...] = ()

    def hourly(self, times, utc_offset: str | None = None) -> xr.Dataset:
        """emis_<s>(time, <grid>) = sum over sectors of map x hour x weekday x month profile."""
        t = pd.DatetimeIndex(times) + parse_utc_offset(utc_offset or self.utc_offset)
        fac = (self.profile_hour[:, t.hour] * self.profile_weekday[:, t.dayofweek]
               * self.profile_month[:, t.month - 1])  # (sector, time)
        f = xr.DataArray(fac.astype(np.float32), dims=("sector", "time"))
        out = xr.Dataset({k: (self.maps[k] * f).sum("sector").transpose("time", ...).astype(np.float32)
                          for k in self.maps.data_vars})
        out = out.assign_coords(time=pd.DatetimeIndex(times).values)
        for k in out.data_vars:
            out[k].attrs = {"units": INTERNAL_UNITS[k]}
        out["time"].attrs["timezone"] = "UTC"
        out.attrs = {k: self.maps.attrs[k] for k in ("sources", "missing") if k in self.maps.attrs}
        return out


def _profile(raw: xr.Dataset, name: str, nsec: int, file: str, problems: list[Problem]) -> np.ndarray | None:
    dim, n = PROFILES[name]
    if name not in raw.data_vars:
        return None
    da = raw[name]
    if set(da.dims) != {"sector", dim} or da.sizes[dim] != n:
        problems.append(Problem(f"expected dims (sector, {dim}={n}), found {dict(da.sizes)}", file, column=name))
        return None
    v = da.transpose("sector", dim).values.astype(np.float64)
    if np.isnan(v).any() or (v < 0).any():
        problems.append(Problem("profile has missing or negative values", file, column=name))
    elif (np.abs(v.mean(axis=1) - 1.0) > 0.05).any():
        problems.append(Problem(f"profile means {np.round(v.mean(axis=1), 3).tolist()} should be 1", file,
                                column=name))
    return v


def read_emissions(path: str | Path) -> EmissionInventory:
    """Emission file (annual-mean flux maps per sector + temporal profiles). Absent profiles are flat (1)."""
    file = Path(path).name
    raw = open_netcdf(path, "emissions")
    if "sector" not in raw.dims:
        raise DataError(Problem(f"no 'sector' dimension (dims {dict(raw.sizes)})", file, column="sector"))
    raw = normalise_grid(raw, file)
    data, missing = _convert_vars(raw, EMIS_VARS, file, "emission", _dims_options(raw, "sector"))
    nsec = raw.sizes["sector"]
    problems: list[Problem] = []
    profs = {}
    for name, (_, n) in PROFILES.items():
        p = _profile(raw, name, nsec, file, problems)
        if p is None and name not in raw.data_vars:
            missing.append(name)
        profs[name] = p if p is not None else np.ones((nsec, n))
    if problems:
        raise DataError(problems)
    maps = _finish(raw, data, missing, file)
    if "sector" in raw.coords:
        maps = maps.assign_coords(sector=raw["sector"].values)
    return EmissionInventory(maps=maps, profile_hour=profs["profile_hour"],
                             profile_weekday=profs["profile_weekday"], profile_month=profs["profile_month"],
                             utc_offset=str(raw.attrs.get("profile_utc_offset", "+00:00")),
                             missing=tuple(missing))


def read_static(path: str | Path) -> xr.Dataset:
    """`static.nc` -> Dataset with `elevation` (m) on the file's grid; a time dimension is dropped (first)."""
    file = Path(path).name
    raw = normalise_grid(open_netcdf(path, "static"), file)
    if "time" in raw.dims:
        raw = raw.isel(time=0, drop=True)
    data, missing = _convert_vars(raw, STATIC_VARS, file, "static", ({"latitude", "longitude"}, {"y", "x"}))
    v = data["elevation"].values
    bad = ~np.isnan(v) & ((v < ELEV_RANGE[0]) | (v > ELEV_RANGE[1]))
    if bad.any():
        raise DataError(Problem(f"{int(bad.sum())} elevation values outside {list(ELEV_RANGE)} m "
                                f"(e.g. {v[bad].ravel()[0]:g}); wrong units?", file, column="elevation"))
    return _finish(raw, data, missing, file)
