"""The model grid: square cells in a Lambert azimuthal equal-area (LAEA) projection.

Rows run south -> north (y ascending), columns west -> east. Cell centres lie on multiples of `res_m` in the
projection, so a cell's id `"{res_m}m_{i}_{j}"` (i = round(x / res_m), j = round(y / res_m)) is the same in
every grid that shares the CRS (projection centre) and resolution.
"""
from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from features.errors import OutOfDomainError

_ID_RE = re.compile(r"^(\d+)m_(-?\d+)_(-?\d+)$")


@lru_cache(maxsize=32)
def _transformers(crs: str) -> tuple[Any, Any]:
    """(forward lon/lat -> x/y, inverse) pyproj transformers for `crs`, cached."""
    from pyproj import Transformer

    fwd = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    inv = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    return fwd, inv


class Grid(BaseModel):
    """A regular grid of `ny` x `nx` square cells of `res_m` metres in an LAEA projection."""

    model_config = ConfigDict(frozen=True)

    lon_0: float = Field(description="projection centre longitude (whole degrees)")
    lat_0: float = Field(description="projection centre latitude (whole degrees)")
    res_m: int = Field(gt=0, description="cell size in metres")
    x0: float = Field(description="x of the centre of cell (row 0, col 0), metres")
    y0: float = Field(description="y of the centre of cell (row 0, col 0), metres")
    nx: int = Field(gt=0)
    ny: int = Field(gt=0)

    @model_validator(mode="after")
    def _snapped(self) -> Grid:
        for name in ("x0", "y0"):
            v = getattr(self, name)
            if abs(v / self.res_m - round(v / self.res_m)) > 1e-6:
                raise ValueError(f"{name}={v} is not a multiple of res_m={self.res_m}")
        return self

    # ---- construction -------------------------------------------------------------------------------
    @classmethod
    def from_extent(cls, lon: Any, lat: Any, res_km: float = 3.0, margin_km: float = 15.0,
                    lon_0: float | None = None, lat_0: float | None = None) -> Grid:
        """Smallest grid covering the points (e.g. stations) plus `margin_km` on every side."""
        lon = np.atleast_1d(np.asarray(lon, dtype=float))
        lat = np.atleast_1d(np.asarray(lat, dtype=float))
        ok = np.isfinite(lon) & np.isfinite(lat)
        if not ok.any():
            raise OutOfDomainError("cannot derive a grid: no finite station coordinates")
        lon, lat = lon[ok], lat[ok]
        if (np.abs(lat) > 90).any() or (np.abs(lon) > 360).any():
            raise OutOfDomainError("station coordinates out of range (lat within ±90, lon within ±180)")
        res_m = round(res_km * 1000)
        if res_m <= 0:
            raise ValueError(f"res_km must be positive, got {res_km}")
        lon_0 = float(round(float(np.mean(lon)))) if lon_0 is None else float(lon_0)
        lat_0 = float(round(float(np.mean(lat)))) if lat_0 is None else float(lat_0)
        fwd, _ = _transformers(_crs(lon_0, lat_0))
        x, y = fwd.transform(lon, lat)
        m = margin_km * 1000.0
        i0, i1 = math.floor((np.min(x) - m) / res_m), math.ceil((np.max(x) + m) / res_m)
        j0, j1 = math.floor((np.min(y) - m) / res_m), math.ceil((np.max(y) + m) / res_m)
        return cls(lon_0=lon_0, lat_0=lat_0, res_m=res_m, x0=float(i0 * res_m), y0=float(j0 * res_m),
                   nx=i1 - i0 + 1, ny=j1 - j0 + 1)

    def covering(self, lon: Any, lat: Any, margin_km: float = 15.0) -> Grid:
        """This grid grown by whole cells (same projection, resolution and cell ids) to hold every point with
        `margin_km` around it; the grid itself when every point already lies in a cell."""
        lon = np.atleast_1d(np.asarray(lon, dtype=float))
        lat = np.atleast_1d(np.asarray(lat, dtype=float))
        if self.contains(lon, lat).all():
            return self
        x, y = self.project(lon, lat)
        r, m = self.res_m, margin_km * 1000.0
        i_lo, j_lo = round(self.x0 / r), round(self.y0 / r)
        i0, i1 = min(i_lo, math.floor((np.min(x) - m) / r)), max(i_lo + self.nx - 1, math.ceil((np.max(x) + m) / r))
        j0, j1 = min(j_lo, math.floor((np.min(y) - m) / r)), max(j_lo + self.ny - 1, math.ceil((np.max(y) + m) / r))
        return Grid(lon_0=self.lon_0, lat_0=self.lat_0, res_m=r, x0=float(i0 * r), y0=float(j0 * r),
                    nx=i1 - i0 + 1, ny=j1 - j0 + 1)

    def km_outside(self, lon: Any, lat: Any) -> np.ndarray:
        """Distance (km) from each point to the nearest cell of the grid; 0 inside."""
        x, y = self.project(np.atleast_1d(np.asarray(lon, float)), np.atleast_1d(np.asarray(lat, float)))
        h = self.res_m / 2
        dx = np.maximum.reduce([self.x[0] - h - x, x - self.x[-1] - h, np.zeros_like(x)])
        dy = np.maximum.reduce([self.y[0] - h - y, y - self.y[-1] - h, np.zeros_like(y)])
        return np.hypot(dx, dy) / 1000.0

    def contains(self, lon: Any, lat: Any) -> np.ndarray:
        """True where a lon/lat point falls in a cell of the grid."""
        return self.cells(lon, lat)[2]

    def cells(self, lon: Any, lat: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, col, inside): the rounded cell indices (floats, NaN where the projection fails) of each lon/lat and
        whether that cell is on the grid."""
        x, y = self.project(np.atleast_1d(np.asarray(lon, float)), np.atleast_1d(np.asarray(lat, float)))
        col, row = np.rint((x - self.x0) / self.res_m), np.rint((y - self.y0) / self.res_m)
        inside = np.isfinite(col) & np.isfinite(row) & (col >= 0) & (col < self.nx) & (row >= 0) & (row < self.ny)
        return row, col, inside

    # ---- geometry -----------------------------------------------------------------------------------
    @property
    def crs(self) -> str:
        """PROJ string of the grid's projection."""
        return _crs(self.lon_0, self.lat_0)

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx)."""
        return (self.ny, self.nx)

    @property
    def x(self) -> np.ndarray:
        """Cell-centre x coordinates (metres), west -> east."""
        return self.x0 + self.res_m * np.arange(self.nx, dtype=float)

    @property
    def y(self) -> np.ndarray:
        """Cell-centre y coordinates (metres), south -> north."""
        return self.y0 + self.res_m * np.arange(self.ny, dtype=float)

    def project(self, lon: Any, lat: Any) -> tuple[np.ndarray, np.ndarray]:
        """lon/lat (degrees) -> projected x/y (metres)."""
        fwd, _ = _transformers(self.crs)
        x, y = fwd.transform(np.asarray(lon, dtype=float), np.asarray(lat, dtype=float))
        return np.asarray(x), np.asarray(y)

    def unproject(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Projected x/y (metres) -> lon/lat (degrees)."""
        _, inv = _transformers(self.crs)
        lon, lat = inv.transform(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
        return np.asarray(lon), np.asarray(lat)

    def lonlat_to_rowcol(self, lon: Any, lat: Any) -> tuple[Any, Any]:
        """Cell (row, col) containing each lon/lat; ints for scalars. Raises `OutOfDomainError`."""
        scalar = np.ndim(lon) == 0 and np.ndim(lat) == 0
        lon_a, lat_a = np.atleast_1d(np.asarray(lon, float)), np.atleast_1d(np.asarray(lat, float))
        row, col, inside = self.cells(lon_a, lat_a)
        bad = ~inside
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            lo, la = self.bounds_lonlat()
            raise OutOfDomainError(
                f"{int(bad.sum())} coordinate(s) outside the grid, first lon={lon_a.flat[k]:.4f} "
                f"lat={lat_a.flat[k]:.4f}; the grid covers about lon {lo[0]:.3f}..{lo[1]:.3f}, "
                f"lat {la[0]:.3f}..{la[1]:.3f} ({self.ny}x{self.nx} cells of {self.res_m} m)")
        row, col = row.astype(np.int64), col.astype(np.int64)
        if scalar:
            return int(row[0]), int(col[0])
        return row.reshape(np.shape(lon_a)), col.reshape(np.shape(lon_a))

    def rowcol_to_lonlat(self, row: Any, col: Any) -> tuple[Any, Any]:
        """lon/lat of the centre of cell(s) (row, col); floats for scalars."""
        r, c = np.asarray(row), np.asarray(col)
        if ((r < 0) | (r >= self.ny) | (c < 0) | (c >= self.nx)).any():
            raise OutOfDomainError(f"row/col outside the {self.ny}x{self.nx} grid: row={row}, col={col}")
        lon, lat = self.unproject(self.x0 + c * self.res_m, self.y0 + r * self.res_m)
        if np.ndim(row) == 0 and np.ndim(col) == 0:
            return float(lon), float(lat)
        return lon, lat

    def centres_lonlat(self) -> tuple[np.ndarray, np.ndarray]:
        """(lon2d, lat2d), each (ny, nx), of the cell centres."""
        xx, yy = np.meshgrid(self.x, self.y)
        return self.unproject(xx, yy)

    def bounds_lonlat(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """Approximate ((lon_min, lon_max), (lat_min, lat_max)) of the grid's outer edges."""
        h = self.res_m / 2
        xs = np.r_[np.linspace(self.x[0] - h, self.x[-1] + h, 50), np.full(50, self.x[0] - h),
                   np.full(50, self.x[-1] + h), np.linspace(self.x[0] - h, self.x[-1] + h, 50)]
        ys = np.r_[np.full(50, self.y[0] - h), np.linspace(self.y[0] - h, self.y[-1] + h, 50),
                   np.linspace(self.y[0] - h, self.y[-1] + h, 50), np.full(50, self.y[-1] + h)]
        lon, lat = self.unproject(xs, ys)
        return (float(lon.min()), float(lon.max())), (float(lat.min()), float(lat.max()))

    # ---- ids ----------------------------------------------------------------------------------------
    def cell_ids(self) -> np.ndarray:
        """(ny, nx) array of stable cell ids `"{res_m}m_{i}_{j}"`."""
        i = np.rint(self.x / self.res_m).astype(np.int64)
        j = np.rint(self.y / self.res_m).astype(np.int64)
        return np.array([[f"{self.res_m}m_{ii}_{jj}" for ii in i] for jj in j], dtype=object)

    def cell_id(self, row: int, col: int) -> str:
        """Stable id of one cell."""
        if not (0 <= row < self.ny and 0 <= col < self.nx):
            raise OutOfDomainError(f"row/col ({row}, {col}) outside the {self.ny}x{self.nx} grid")
        return f"{self.res_m}m_{round(self.x[col] / self.res_m)}_{round(self.y[row] / self.res_m)}"

    def cell_id_to_rowcol(self, cell_id: str) -> tuple[int, int]:
        """(row, col) of a cell id; raises `OutOfDomainError` if malformed, other resolution or outside."""
        m = _ID_RE.match(str(cell_id).strip())
        if not m:
            raise OutOfDomainError(f"malformed cell id {cell_id!r}; expected '<res>m_<i>_<j>'")
        res, i, j = (int(g) for g in m.groups())
        if res != self.res_m:
            raise OutOfDomainError(f"cell id {cell_id!r} is for a {res} m grid, this grid has {self.res_m} m")
        col = i - round(self.x0 / self.res_m)
        row = j - round(self.y0 / self.res_m)
        if not (0 <= row < self.ny and 0 <= col < self.nx):
            raise OutOfDomainError(f"cell id {cell_id!r} lies outside this {self.ny}x{self.nx} grid")
        return row, col

    # ---- serialisation ------------------------------------------------------------------------------
    def to_json(self) -> str:
        """JSON text (what the store's `grid` attr and `--grid FILE` hold)."""
        d = self.model_dump()
        d["crs"] = self.crs
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str | dict) -> Grid:
        """Grid from JSON text or dict (a `crs` key is informational and ignored)."""
        d = json.loads(text) if isinstance(text, str) else dict(text)
        d.pop("crs", None)
        return cls(**d)


def _crs(lon_0: float, lat_0: float) -> str:
    return f"+proj=laea +lat_0={lat_0:g} +lon_0={lon_0:g} +x_0=0 +y_0=0 +datum=WGS84 +units=m +no_defs"
