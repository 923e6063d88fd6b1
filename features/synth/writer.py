"""Write a synthetic world in exactly the raw-data formats the real readers take (docs/architecture.md)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from features.synth.emissions import FILE_SPECIES, SECTORS, SPECIES, Inventory
from features.synth.geo import Landscape
from features.synth.weather import REGIMES, Weather

UCI_COLUMNS = ["No", "year", "month", "day", "hour", "PM2.5", "PM10", "SO2", "NO2", "CO", "O3", "TEMP", "PRES",
               "DEWP", "RAIN", "wd", "WSPM", "station"]
ENC = {"zlib": True, "complevel": 1}


def global_attrs(seed: int, title: str) -> dict:
    """Attributes every synthetic NetCDF carries."""
    return {"synthetic": "true", "seed": int(seed), "generator": "aqcast features.synth 1.0", "title": title,
            "comment": "SYNTHETIC DATA from aqcast's transport-chemistry simulator, not observations"}


def _grid_coords(land: Landscape) -> dict:
    g = land.grid
    return {"y": ("y", g.y, {"units": "m", "axis": "Y"}), "x": ("x", g.x, {"units": "m", "axis": "X"}),
            "lon": (("y", "x"), land.lon, {"units": "degrees_east"}),
            "lat": (("y", "x"), land.lat, {"units": "degrees_north"})}


def _write_nc(ds: xr.Dataset, path: Path, land: Landscape, seed: int, title: str) -> None:
    ds.attrs.update(global_attrs(seed, title))
    ds.attrs["crs"] = land.grid.crs
    ds.attrs["grid"] = land.grid.to_json()
    if "time" in ds.coords:
        ds["time"].attrs["timezone"] = "UTC"
    enc = {k: dict(ENC) for k in ds.data_vars if ds[k].ndim >= 2}
    if "time" in ds.coords:
        enc["time"] = {"units": "minutes since 1970-01-01", "dtype": "int64"}
    ds.to_netcdf(path, engine="h5netcdf", encoding=enc)


def write_stations(out: Path, frames: dict[str, pd.DataFrame], table: pd.DataFrame) -> list[Path]:
    """One `PRSA_Data_<station>_<first>-<last>.csv` per station (local dates) + stations.csv."""
    paths = []
    for name, df in frames.items():
        first = f"{int(df.year.iloc[0]):04d}{int(df.month.iloc[0]):02d}{int(df.day.iloc[0]):02d}"
        last = f"{int(df.year.iloc[-1]):04d}{int(df.month.iloc[-1]):02d}{int(df.day.iloc[-1]):02d}"
        p = out / f"PRSA_Data_{name}_{first}-{last}.csv"
        df[UCI_COLUMNS].to_csv(p, index=False, float_format="%.1f", na_rep="", lineterminator="\n")
        paths.append(p)
    tab = table[["station", "kind", "row", "col", "met_station", "lon", "lat"]].copy()
    tab["synthetic"] = "true"
    tab.to_csv(out / "stations.csv", index=False, lineterminator="\n")
    return paths


def write_meteorology(out: Path, wx: Weather, land: Landscape, seed: int) -> None:
    """ERA5-style hourly meteorology on the grid (K, Pa, m, J m-2)."""
    f = np.float32
    dims = ("time", "y", "x")
    ds = xr.Dataset(
        {"t2m": (dims, (wx.t2m + 273.15).astype(f), {"units": "K", "long_name": "2 metre temperature"}),
         "d2m": (dims, (wx.d2m + 273.15).astype(f), {"units": "K", "long_name": "2 metre dewpoint temperature"}),
         "sp": (dims, (wx.sp * 100.0).astype(f), {"units": "Pa", "long_name": "Surface pressure"}),
         "u10": (dims, wx.u10, {"units": "m s**-1", "long_name": "10 metre U wind component"}),
         "v10": (dims, wx.v10, {"units": "m s**-1", "long_name": "10 metre V wind component"}),
         "tp": (dims, (wx.tp / 1000.0).astype(f), {"units": "m", "long_name": "Total precipitation (hour)"}),
         "blh": (dims, wx.blh, {"units": "m", "long_name": "Boundary layer height"}),
         "ssrd": (dims, (wx.ssr * 3600.0).astype(f),
                  {"units": "J m**-2", "long_name": "Surface solar radiation downwards (hour)"})},
        coords={"time": ("time", wx.times), **_grid_coords(land)})
    _write_nc(ds, out / "meteorology.nc", land, seed, "synthetic ERA5-style meteorology")


def write_satellite(out: Path, times: np.ndarray, aod: np.ndarray, no2col: np.ndarray, land: Landscape,
                    seed: int) -> None:
    """Daily overpass retrievals (NaN = cloud gap)."""
    dims = ("time", "y", "x")
    ds = xr.Dataset({"aod": (dims, aod, {"units": "1", "long_name": "aerosol optical depth at 550 nm"}),
                     "no2col": (dims, no2col, {"units": "umol m-2", "long_name": "tropospheric NO2 column"})},
                    coords={"time": ("time", times), **_grid_coords(land)})
    ds.attrs["overpass_local_time"] = "13:30 (UTC+08:00)"
    _write_nc(ds, out / "satellite.nc", land, seed, "synthetic satellite retrievals")


def write_emissions(out: Path, inv: Inventory, land: Landscape, seed: int) -> None:
    """Annual-mean sector maps (kg km-2 h-1) + local-time profiles (mean 1)."""
    data = {}
    for sp in FILE_SPECIES:
        data[f"emis_{sp}"] = (("sector", "y", "x"), inv.maps[:, SPECIES.index(sp)].astype(np.float32),
                              {"units": "kg km-2 h-1", "long_name": f"{sp} emission flux, annual mean"})
    data["profile_hour"] = (("sector", "hour"), inv.hour, {"units": "1", "index": "local hour (UTC+08:00)"})
    data["profile_weekday"] = (("sector", "weekday"), inv.weekday, {"units": "1", "index": "0 = Monday"})
    data["profile_month"] = (("sector", "month"), inv.month, {"units": "1", "index": "0 = January"})
    ds = xr.Dataset(data, coords={"sector": ("sector", np.array(SECTORS, dtype=str)),
                                  "hour": np.arange(24), "weekday": np.arange(7), "month": np.arange(12),
                                  **_grid_coords(land)})
    ds.attrs["profile_utc_offset"] = "+08:00"
    ds.attrs["sector_split"] = "MEIC 2015 national sector shares (Zheng et al. 2018)"
    ds.attrs["not_included"] = "biogenic VOC (temperature/light dependent), CO, coarse dust"
    _write_nc(ds, out / "emissions.nc", land, seed, "synthetic emission inventory")


def write_static(out: Path, land: Landscape, seed: int) -> None:
    """Terrain height."""
    ds = xr.Dataset({"elevation": (("y", "x"), land.elevation.astype(np.float32), {"units": "m"})},
                    coords=_grid_coords(land))
    _write_nc(ds, out / "static.nc", land, seed, "synthetic terrain")


def write_truth(path: Path, times: np.ndarray, fields: dict[str, np.ndarray], land: Landscape, seed: int,
                wx: Weather | None = None, k0: int = 0, title: str = "synthetic truth") -> None:
    """True cell concentrations (ug m-3) + the weather regime of each hour."""
    dims = ("time", "y", "x")
    data = {k: (dims, v, {"units": "ug m-3", "long_name": f"true mixed-layer {k}"}) for k, v in fields.items()}
    if wx is not None:
        data["regime"] = (("time",), wx.regime[k0:k0 + len(times)].astype(np.int8),
                          {"flag_values": "0 1 2 3", "flag_meanings": " ".join(REGIMES)})
        data["haze_index"] = (("time",), wx.haze[k0:k0 + len(times)].astype(np.float32), {"units": "1"})
    ds = xr.Dataset(data, coords={"time": ("time", times), **_grid_coords(land)})
    _write_nc(ds, path, land, seed, title)


def write_sources(out: Path, inv: Inventory) -> None:
    """Big point emitters: source_id,name,sector,lon,lat."""
    df = pd.DataFrame(inv.sources, columns=["source_id", "name", "sector", "lon", "lat"])
    df.to_csv(out / "sources.csv", index=False, lineterminator="\n")


def write_json(path: Path, obj: dict) -> None:
    """Deterministic JSON (sorted keys)."""
    path.write_text(json.dumps(obj, indent=1, sort_keys=True, default=float) + "\n")
