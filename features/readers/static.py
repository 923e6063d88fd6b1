"""Static fields: terrain height from `static.nc` or the 0.05° China elevation .npy.

Public API:
    read_static(path) -> xr.Dataset                      `elevation` (m) on the file's grid (defined in gridded)
    read_elevation_npy(path, *, lat_north=48.0, lon_west=100.0, res_deg=0.05) -> xr.DataArray
        (latitude ascending south -> north, longitude ascending west -> east), name `elevation`, units m
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr

from features.errors import DataError, MissingInputError, Problem
from features.readers.gridded import ELEV_RANGE, _sha256, read_static

__all__ = ["read_elevation_npy", "read_static"]


def read_elevation_npy(path: str | Path, *, lat_north: float = 48.0, lon_west: float = 100.0,
                       res_deg: float = 0.05) -> xr.DataArray:
    """Regular lat/lon elevation array (row 0 = `lat_north`, rows run south; col 0 = `lon_west`, cols east)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(Problem("elevation .npy file not found", file=str(path)))
    try:
        a = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - ValueError, OSError, EOFError ... on corrupt input
        raise DataError(Problem(f"cannot read as a NumPy .npy array ({type(e).__name__}: {e})",
                                file=str(path))) from None
    if a.ndim != 2 or not np.issubdtype(a.dtype, np.number) or min(a.shape) < 2:
        raise DataError(Problem(f"expected a 2-D numeric array, found shape {a.shape} dtype {a.dtype}",
                                file=str(path)))
    lat = lat_north - res_deg * np.arange(a.shape[0])
    lon = lon_west + res_deg * np.arange(a.shape[1])
    if lat.min() < -90 or lat_north > 90 or lon_west < -180 or lon.max() > 360:
        raise DataError(Problem(f"grid {lat.min()}..{lat_north}N, {lon_west}..{lon.max()}E is outside the "
                                "valid range", file=str(path)))
    a = a.astype(np.float32)
    bad = ~np.isnan(a) & ((a < ELEV_RANGE[0]) | (a > ELEV_RANGE[1]))
    if bad.any():
        raise DataError(Problem(f"{int(bad.sum())} elevation values outside {list(ELEV_RANGE)} m "
                                f"(e.g. {a[bad][0]:g}); wrong units?", file=str(path)))
    da = xr.DataArray(a[::-1], dims=("latitude", "longitude"),
                      coords={"latitude": np.round(lat[::-1], 6), "longitude": np.round(lon, 6)},
                      name="elevation",
                      attrs={"units": "m", "sources": json.dumps([{"path": str(path.resolve()),
                                                                    "sha256": _sha256(path)}])})
    da["latitude"].attrs["units"] = "degrees_north"
    da["longitude"].attrs["units"] = "degrees_east"
    return da
