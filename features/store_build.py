"""Steps of `features.store.build_store`: each adds channels to the store being built (`Context.ds`).

An optional input that is absent (or whose reader is not available) is recorded in `Context.missing`
({variable: reason}) and never stops the build. Inputs that are present but broken raise `DataError`.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from features import regrid
from features.errors import DataError
from features.grid import Grid
from features.store import MET_VARS, POLLUTANTS, SAT_VARS, TARGETS, sha256_file

UNITS = {"pm25": "ug m-3", "pm10": "ug m-3", "so2": "ug m-3", "no2": "ug m-3", "co": "ug m-3", "o3": "ug m-3",
         "t2m": "degC", "d2m": "degC", "sp": "hPa", "tp": "mm h-1", "u10": "m s-1", "v10": "m s-1",
         "ws": "m s-1", "rh": "%", "blh": "m", "ssr": "W m-2", "aod": "1", "no2col": "umol m-2"}
FLAG_NAMES = {1: "STUCK", 2: "SPIKE", 4: "NEGATIVE", 8: "IMPOSSIBLE", 16: "LONG_GAP"}
IDW_LABEL = "interpolated from stations (IDW)"
# MEIC species -> emission channel
MEIC_SPECIES = {"NOx": "nox", "SO2": "so2", "NMVOC": "voc", "NH3": "nh3", "PM2.5": "pm25"}
CHINA_AREA_KM2 = 9.6e6
# side files a store may be derived from: build option -> (folder beside the data directory, file name)
SIDE_FILES = {"emission_totals": ("emissions", "meic_china_sector_totals_2010_2017.csv"),
              "elevation": ("elevation", "altitude_0.05deg_china.npy")}


@dataclass
class Context:
    """State shared by the build steps."""

    data_dir: Path
    res_km: float = 3.0
    grid: Grid | None = None
    margin_km: float = 15.0
    elevation: str | Path | None = None
    emission_totals: str | Path | None = None
    emission_proxy_points: tuple[list[float], list[float]] | None = None  # (lons, lats); None: the stations
    emission_proxy_grid: Grid | None = None  # the proxy has mean 1 over it (None: over `grid`)
    outside_stations: str = "error"  # stations off a given grid: 'error', or 'drop' (listed in `dropped`)
    dropped: dict[str, str] = field(default_factory=dict)  # station -> why it is not in the store
    weather_clock: str = "auto"  # features.clock: 'auto' realigns months whose weather runs whole hours off
    weather_clock_reference: dict | None = None  # features.clock.reference_phases of a model's training record
    clock_report: dict = field(default_factory=dict)
    ds: xr.Dataset = field(default_factory=xr.Dataset)
    st: xr.Dataset | None = None
    flags: xr.Dataset | None = None
    utc_offset: str = "+08:00"
    sources: list[dict] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)
    qc_summary: dict = field(default_factory=dict)
    qc_by_var: dict = field(default_factory=dict)

    @property
    def times(self) -> np.ndarray:
        return self.ds["time"].values

    def add(self, name: str, dims: tuple[str, ...], data: np.ndarray, role: str, units: str, **attrs: Any) -> None:
        arr = np.asarray(data, dtype=np.uint8 if role == "qc" else np.float32)
        self.ds[name] = (dims, arr, {"units": units, "role": role, **attrs})

    def source(self, path: Path) -> None:
        self.sources.append({"path": str(Path(path).resolve()), "sha256": sha256_file(path)})


def _reader(module: str, name: str) -> Callable | None:
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


# ---- steps -----------------------------------------------------------------------------------------------
def step_stations(ctx: Context) -> None:
    import logging

    from features.clock import correct_weather_clock, summary
    from features.readers.stations import read_stations

    st = read_stations(ctx.data_dir)
    ctx.utc_offset = str(st.attrs.get("source_utc_offset", "+08:00"))
    st, ctx.clock_report = correct_weather_clock(st, ctx.utc_offset, ctx.weather_clock,
                                                 ctx.weather_clock_reference)
    if ctx.clock_report["shifts_h"] or ctx.clock_report["undetermined"]:
        logging.getLogger("aqcast.features").warning(summary(ctx.clock_report))
    ctx.st = st
    ctx.sources += json.loads(st.attrs.get("sources", "[]"))
    flag = _reader("features.qc", "flag")
    ctx.flags = flag(st) if flag is not None else None
    if ctx.flags is None:
        ctx.missing["qc"] = "features.qc not available: no data-quality flags"
        return
    for s_i, s in enumerate(st["station"].values):
        tot: dict[str, int] = {}
        per: dict[str, dict[str, int]] = {}
        for v in ctx.flags.data_vars:
            f = ctx.flags[v].transpose("station", "time").values[s_i]
            counts = {lab: int(np.count_nonzero(f & bit)) for bit, lab in FLAG_NAMES.items()}
            counts = {k: n for k, n in counts.items() if n}
            if counts:
                per[str(v)[3:]] = counts
                for k, n in counts.items():
                    tot[k] = tot.get(k, 0) + n
        ctx.qc_summary[str(s)], ctx.qc_by_var[str(s)] = tot, per


def step_grid(ctx: Context) -> None:
    st = ctx.st
    lon, lat = st["lon"].values, st["lat"].values
    if ctx.grid is None:
        ctx.grid = Grid.from_extent(lon, lat, res_km=ctx.res_km, margin_km=ctx.margin_km)
    g = ctx.grid
    inside = g.contains(lon, lat)
    if ctx.outside_stations == "drop" and not inside.all() and inside.any():
        (lo0, lo1), (la0, la1) = g.bounds_lonlat()
        for name, x, y in zip(st["station"].values[~inside], lon[~inside], lat[~inside], strict=True):
            ctx.dropped[str(name)] = (f"at lon {x:.4f}, lat {y:.4f}, outside the grid (lon {lo0:.2f}..{lo1:.2f}, "
                                      f"lat {la0:.2f}..{la1:.2f})")
        keep = np.flatnonzero(inside)
        st = ctx.st = st.isel(station=keep)
        if ctx.flags is not None:
            ctx.flags = ctx.flags.isel(station=keep)
        lon, lat = st["lon"].values, st["lat"].values
    rows, cols = regrid.station_cells(g, lon, lat, names=st["station"].values)
    lon2d, lat2d = g.centres_lonlat()
    ctx.ds = xr.Dataset(coords={
        "time": ("time", st["time"].values.astype("datetime64[ns]"), {"timezone": "UTC"}),
        "y": ("y", g.y, {"units": "m", "long_name": "projected y (LAEA), cell centre"}),
        "x": ("x", g.x, {"units": "m", "long_name": "projected x (LAEA), cell centre"}),
        "lon": (("y", "x"), lon2d, {"units": "degrees_east"}),
        "lat": (("y", "x"), lat2d, {"units": "degrees_north"}),
        "station": ("station", st["station"].values.astype(str)),
        "station_lon": ("station", lon.astype(np.float64)), "station_lat": ("station", lat.astype(np.float64)),
        "station_row": ("station", rows), "station_col": ("station", cols)})


def _station_values(ctx: Context, v: str, drop_flagged: bool) -> np.ndarray:
    vals = np.array(ctx.st[v].transpose("time", "station").values, dtype=np.float32)
    q = f"qc_{v}"
    if drop_flagged and ctx.flags is not None and q in ctx.flags:
        vals[ctx.flags[q].transpose("time", "station").values != 0] = np.nan
    return vals


def step_station_fields(ctx: Context) -> None:
    ds, g = ctx.ds, ctx.grid
    rows, cols = ds["station_row"].values, ds["station_col"].values
    for p in POLLUTANTS:
        if p not in ctx.st:
            ctx.missing[f"stn_{p}"] = "not in the station files"
            continue
        raw = _station_values(ctx, p, drop_flagged=False)
        ctx.add(f"stn_{p}", ("time", "station"), raw, "target" if p in TARGETS else "observed", UNITS[p])
        if ctx.flags is not None and f"qc_{p}" in ctx.flags:
            ctx.add(f"qc_{p}", ("time", "station"), ctx.flags[f"qc_{p}"].transpose("time", "station").values,
                    "qc", "1", flag_meanings="1 STUCK 2 SPIKE 4 NEGATIVE 8 IMPOSSIBLE 16 LONG_GAP")
        ctx.add(f"obs_{p}", ("time", "y", "x"), regrid.scatter_stations(raw, rows, cols, g), "observed",
                UNITS[p], long_name=f"station {p} in their cells (mean if shared; QC flags not applied)")
    ctx.add("station_distance_km", ("y", "x"),
            regrid.distance_to_nearest_km(g, ds["station_lon"].values, ds["station_lat"].values), "static", "km")


def step_meteorology(ctx: Context) -> None:
    path = ctx.data_dir / "meteorology.nc"
    done: set[str] = set()
    if path.exists():
        read = _reader("features.readers.gridded", "read_meteorology")
        if read is None:
            raise DataError(f"{path}: present, but features.readers.gridded.read_meteorology is not available")
        met = read(path)
        ctx.source(path)
        names = [v for v in MET_VARS if v in met]
        if names:
            w = regrid.source_weights(met[names[0]], ctx.grid, "linear")
            for v in names:
                vals = regrid.regrid_field(met[v], ctx.grid, ctx.times, weights=w)
                regrid.check_overlap(vals, f"meteorology.nc:{v}")
                ctx.add(f"met_{v}", ("time", "y", "x"), vals, "forcing", UNITS[v], derived=f"gridded: {path.name}")
                done.add(v)
    st_lon, st_lat = ctx.ds["station_lon"].values, ctx.ds["station_lat"].values
    for v in MET_VARS:
        if v in done:
            continue
        if v not in ctx.st:
            ctx.missing[f"met_{v}"] = "no meteorology.nc variable and no station column"
            continue
        vals = regrid.idw(_station_values(ctx, v, drop_flagged=True), st_lon, st_lat, ctx.grid)
        ctx.add(f"met_{v}", ("time", "y", "x"), vals, "forcing", UNITS[v], derived=IDW_LABEL)


def step_satellite(ctx: Context) -> None:
    path = ctx.data_dir / "satellite.nc"
    if not path.exists():
        for v in SAT_VARS:
            ctx.missing[f"sat_{v}"] = "no satellite.nc"
        return
    read = _reader("features.readers.gridded", "read_satellite")
    if read is None:
        raise DataError(f"{path}: present, but features.readers.gridded.read_satellite is not available")
    sat = read(path)
    ctx.source(path)
    for v in SAT_VARS:
        if v not in sat:
            ctx.missing[f"sat_{v}"] = f"not in {path.name}"
            continue
        vals, valid = regrid.regrid_field(sat[v], ctx.grid, ctx.times, how="ceil", with_valid=True)
        ctx.add(f"sat_{v}", ("time", "y", "x"), vals, "observed", UNITS[v],
                derived=f"{path.name}, overpass times rounded up to the hour")
        ctx.add(f"sat_{v}_valid", ("time", "y", "x"), valid, "mask", "1",
                long_name=f"valid (cloud-free) fraction of sat_{v}")


def step_emissions(ctx: Context) -> None:
    path = ctx.data_dir / "emissions.nc"
    species = regrid.EMIS_SPECIES
    if path.exists():
        read = _reader("features.readers.gridded", "read_emissions")
        if read is None:
            raise DataError(f"{path}: present, but features.readers.gridded.read_emissions is not available")
        em = read(path)
        ctx.source(path)
        maps_ds = em.maps if hasattr(em, "maps") else em
        prof = [np.asarray(getattr(em, k) if hasattr(em, k) else em[k].values)
                for k in ("profile_hour", "profile_weekday", "profile_month")]
        offset = str(getattr(em, "utc_offset", "+00:00"))  # profiles are UTC-indexed unless the file says
        fac = regrid.temporal_factors(*prof, ctx.times, offset)
        for s in species:
            name = f"emis_{s}"
            if name not in maps_ds:
                ctx.missing[name] = f"not in {path.name}"
                continue
            da = maps_ds[name]
            maps = (np.stack([regrid.regrid_field(da.isel(sector=k), ctx.grid) for k in range(da.sizes["sector"])])
                    if "sector" in da.dims else regrid.regrid_field(da, ctx.grid)[None])
            ctx.add(name, ("time", "y", "x"), regrid.emissions_on_grid(np.nan_to_num(maps), fac), "forcing",
                    "kg km-2 h-1", derived=f"{path.name}: annual maps x hour/weekday/month profiles")
        return
    totals = ctx.emission_totals
    if totals is None:
        cand = ctx.data_dir.parent.joinpath(*SIDE_FILES["emission_totals"])
        totals = cand if cand.exists() else None
    if totals is None or not Path(totals).exists():
        for s in species:
            ctx.missing[f"emis_{s}"] = "no emissions.nc and no emission totals"
        return
    _derived_emissions(ctx, Path(totals))


def _totals_frame(path: Path) -> pd.DataFrame:
    read = _reader("features.readers.emission_totals", "read_emission_totals")
    obj = read(path) if read is not None else pd.read_csv(path)
    df = obj.to_dataframe().reset_index() if isinstance(obj, (xr.Dataset, xr.DataArray)) else pd.DataFrame(obj)
    df.columns = [str(c).lower() for c in df.columns]
    need = {"species", "year", "sector", "emission_tg"}
    if not need <= set(df.columns):
        raise DataError(f"{path}: emission totals need columns {sorted(need)}, got {sorted(df.columns)}")
    return df


def _derived_emissions(ctx: Context, path: Path) -> None:
    """National sector totals -> flux (kg km-2 h-1) x station-density proxy x default profiles."""
    df = _totals_frame(path)
    ctx.source(path)
    sectors = sorted(df["sector"].astype(str).unique())
    prof = regrid.default_profiles(sectors)
    fac = regrid.temporal_factors(prof["hour"], prof["weekday"], prof["month"], ctx.times, ctx.utc_offset)
    pts = ctx.emission_proxy_points or (ctx.ds["station_lon"].values, ctx.ds["station_lat"].values)
    proxy = regrid.station_density_proxy(ctx.grid, np.asarray(pts[0], float), np.asarray(pts[1], float),
                                         mean_over=ctx.emission_proxy_grid)
    _, _, _, year = regrid.local_calendar(ctx.times, ctx.utc_offset)
    for meic, s in MEIC_SPECIES.items():
        name = f"emis_{s}"
        sub = df[df["species"].astype(str).str.lower() == meic.lower()]
        if sub.empty:
            ctx.missing[name] = f"species {meic} not in {path.name}"
            continue
        tab = sub.pivot_table(index="year", columns="sector", values="emission_tg", aggfunc="sum")
        tab = tab.reindex(columns=sectors).fillna(0.0)
        yrs = tab.index.to_numpy(int)
        rows = tab.to_numpy(float)[np.searchsorted(yrs, np.clip(year, yrs.min(), yrs.max()))]  # [T, sector]
        flux = rows * 1e9 / (CHINA_AREA_KM2 * 8760.0)  # Tg/yr -> kg km-2 h-1 (national mean)
        series = (flux * fac).sum(axis=1).astype(np.float32)  # [T]
        ctx.add(name, ("time", "y", "x"), series[:, None, None] * proxy[None], "forcing", "kg km-2 h-1",
                derived=f"derived: {path.name} national sector totals x station-density proxy x default "
                        "profiles")


def step_static(ctx: Context) -> None:
    path = ctx.data_dir / "static.nc"
    if path.exists():
        read = _reader("features.readers.gridded", "read_static")
        if read is None:
            raise DataError(f"{path}: present, but features.readers.gridded.read_static is not available")
        da, label = read(path), path.name
        ctx.source(path)
    else:
        npy = Path(ctx.elevation) if ctx.elevation else ctx.data_dir.parent.joinpath(*SIDE_FILES["elevation"])
        read = _reader("features.readers.static", "read_elevation_npy")
        if not npy.exists() or read is None:
            ctx.missing["static_elevation"] = "no static.nc and no elevation npy" if read else \
                "features.readers.static not available"
            return
        da, label = read(npy), npy.name
        ctx.source(npy)
    if isinstance(da, xr.Dataset):
        da = da["elevation"]
    vals = regrid.regrid_field(da, ctx.grid)
    regrid.check_overlap(vals, f"{label}:elevation")
    ctx.add("static_elevation", ("y", "x"), vals, "static", "m", derived=label)


def step_truth(ctx: Context) -> None:
    path = ctx.data_dir / "truth.nc"
    if not path.exists():
        return
    truth = xr.open_dataset(path, engine="h5netcdf")
    ctx.source(path)
    for p in TARGETS:
        if p in truth:
            ctx.add(f"truth_{p}", ("time", "y", "x"), regrid.regrid_field(truth[p], ctx.grid, ctx.times),
                    "truth", UNITS[p], long_name=f"synthetic true {p} (never an input)")
    truth.close()


STEPS: list[tuple[str, Callable[[Context], None]]] = [
    ("reading stations + QC", step_stations), ("grid", step_grid), ("station fields", step_station_fields),
    ("meteorology", step_meteorology), ("satellite", step_satellite), ("emissions", step_emissions),
    ("static", step_static), ("truth", step_truth)]
