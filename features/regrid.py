"""Put stations, gridded fields, satellite swaths and emissions onto a `Grid`.

Gridded sources are interpolated with weights computed once per source grid and applied to every time step
at once: bilinear on regular lat/lon grids, barycentric (linear) on curvilinear grids with 2-D lon/lat,
or nearest neighbour. Station fields use inverse-distance weighting, vectorised over time.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from features.errors import DataError, OutOfDomainError
from features.grid import Grid

LAT_NAMES = ("latitude", "lat")
LON_NAMES = ("longitude", "lon")


# ---- stations --------------------------------------------------------------------------------------------
def station_cells(grid: Grid, lon: Any, lat: Any, names: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) int32 of each station; `OutOfDomainError` naming every station outside the grid."""
    lon, lat = np.asarray(lon, float), np.asarray(lat, float)
    row, col, inside = grid.cells(lon, lat)
    bad = ~inside
    if bad.any():
        names = list(names) if names is not None else [str(k) for k in range(lon.size)]
        lo, la = grid.bounds_lonlat()
        raise OutOfDomainError([f"station {str(names[k])!r} at lon={lon[k]:.4f} lat={lat[k]:.4f} lies outside the "
                                f"grid (lon {lo[0]:.3f}..{lo[1]:.3f}, lat {la[0]:.3f}..{la[1]:.3f})"
                                for k in np.flatnonzero(bad)])
    return row.astype(np.int32), col.astype(np.int32)


def scatter_stations(values: np.ndarray, rows: np.ndarray, cols: np.ndarray, grid: Grid) -> np.ndarray:
    """[T, S] station values -> [T, Y, X] float32: NaN away from stations, mean where several share a cell."""
    values = np.asarray(values, np.float32)
    out = np.full((values.shape[0], grid.ny * grid.nx), np.nan, np.float32)
    cells = np.asarray(rows, np.int64) * grid.nx + np.asarray(cols, np.int64)
    for cell in np.unique(cells):
        members = values[:, cells == cell]
        if members.shape[1] == 1:
            out[:, cell] = members[:, 0]
        else:
            ok = np.isfinite(members)
            n = ok.sum(axis=1)
            s = np.where(ok, members, 0).sum(axis=1)
            out[:, cell] = np.where(n > 0, s / np.maximum(n, 1), np.nan)
    return out.reshape(values.shape[0], grid.ny, grid.nx)


def distance_to_nearest_km(grid: Grid, lon: Any, lat: Any) -> np.ndarray:
    """[Y, X] float32 distance (km, in the projection) from each cell centre to the nearest station."""
    sx, sy = grid.project(lon, lat)
    yy, xx = np.meshgrid(grid.y, grid.x, indexing="ij")
    d = np.hypot(yy[..., None] - np.atleast_1d(sy), xx[..., None] - np.atleast_1d(sx))
    return (d.min(axis=-1) / 1000.0).astype(np.float32)


def idw(values: np.ndarray, lon: Any, lat: Any, grid: Grid, power: float = 2.0,
        min_distance_m: float | None = None) -> np.ndarray:
    """Inverse-distance-weighted [T, S] station values -> [T, Y, X] float32 (NaN-aware, per time step)."""
    values = np.asarray(values, np.float32)
    sx, sy = grid.project(lon, lat)
    yy, xx = np.meshgrid(grid.y, grid.x, indexing="ij")
    d = np.hypot(yy.reshape(-1, 1) - np.atleast_1d(sy), xx.reshape(-1, 1) - np.atleast_1d(sx))
    d = np.maximum(d, min_distance_m if min_distance_m is not None else grid.res_m / 4)
    w = (d / d.min()) ** -power  # [YX, S], scaled to stay well inside float32 range
    wt = np.ascontiguousarray(w.T, dtype=np.float32)
    ok = np.isfinite(values)
    num = np.where(ok, values, 0.0).astype(np.float32) @ wt
    den = ok.astype(np.float32) @ wt
    with np.errstate(invalid="ignore", divide="ignore"):
        num /= den  # in place: no third [T, Y*X] array; 0/0 -> NaN where no station reports
    return num.reshape(values.shape[0], grid.ny, grid.nx)


# ---- gridded sources -------------------------------------------------------------------------------------
class Weights:
    """Sparse interpolation weights: out[..., cell] = sum_k w[cell, k] * src[..., idx[cell, k]]."""

    def __init__(self, idx: np.ndarray, w: np.ndarray, shape: tuple[int, int]):
        self.idx, self.w, self.shape = idx, w, shape

    def apply(self, src: np.ndarray, with_valid: bool = False) -> Any:
        """[..., Ys, Xs] -> [..., Y, X] float32 (NaN sources renormalised away; all-NaN support -> NaN).

        With `with_valid`, also returns the valid fraction (weight share of finite sources) per cell.
        """
        src = np.asarray(src, np.float32)
        if src.ndim == 3 and src.shape[0] > 1024:  # bound memory: time chunks
            parts = [self.apply(src[i:i + 1024], with_valid) for i in range(0, src.shape[0], 1024)]
            if with_valid:
                return np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])
            return np.concatenate(parts)
        lead = src.shape[:-2]
        flat = src.reshape(*lead, -1)
        vals = flat[..., self.idx]  # [..., cells, k]
        ok = np.isfinite(vals) & (self.w > 0)
        wsum = np.where(ok, self.w, 0.0).sum(-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(wsum > 0, (np.where(ok, vals, 0.0) * self.w).sum(-1) / wsum, np.nan)
        out = out.astype(np.float32).reshape(*lead, *self.shape)
        if with_valid:
            total = self.w.sum(-1)
            valid = np.where(total > 0, wsum / np.where(total > 0, total, 1), 0.0)
            return out, valid.astype(np.float32).reshape(*lead, *self.shape)
        return out


def _find(ds: xr.Dataset | xr.DataArray, names: tuple[str, ...]) -> str | None:
    return next((n for n in names if n in ds.coords or n in ds.dims), None)


def source_weights(src: xr.Dataset | xr.DataArray, grid: Grid, method: str = "linear") -> Weights:
    """Interpolation weights from a source grid (regular lat/lon, or 2-D lon/lat coords) onto `grid`."""
    lon_t, lat_t = grid.centres_lonlat()
    latn, lonn = _find(src, LAT_NAMES), _find(src, LON_NAMES)
    if latn is None or lonn is None:
        raise DataError("gridded source has no latitude/longitude (or lat/lon) coordinates")
    lat_c, lon_c = np.asarray(src[latn].values, float), np.asarray(src[lonn].values, float)
    if lat_c.ndim == 1 and lon_c.ndim == 1 and src[latn].dims != src[lonn].dims:
        return _regular_weights(lat_c, lon_c, lat_t, lon_t, method)
    if lat_c.ndim != 2 or lon_c.shape != lat_c.shape:
        raise DataError("gridded source: lon/lat must be 1-D (regular) or 2-D of the same shape")
    return _curvilinear_weights(lon_c, lat_c, grid, method)


def _regular_weights(lat_s: np.ndarray, lon_s: np.ndarray, lat_t: np.ndarray, lon_t: np.ndarray,
                     method: str) -> Weights:
    ny_s, nx_s = lat_s.size, lon_s.size
    lon_t = np.where((lon_t < lon_s.min()) & (lon_t + 360 <= lon_s.max()), lon_t + 360, lon_t)
    fi = _frac_index(lat_s, lat_t.ravel())
    fj = _frac_index(lon_s, lon_t.ravel())
    if method == "nearest":
        i = np.clip(np.rint(fi), 0, ny_s - 1).astype(np.int64)
        j = np.clip(np.rint(fj), 0, nx_s - 1).astype(np.int64)
        inside = np.isfinite(fi) & np.isfinite(fj)
        return Weights((i * nx_s + j)[:, None], inside.astype(np.float32)[:, None], lat_t.shape)
    i0 = np.clip(np.floor(np.nan_to_num(fi)), 0, max(ny_s - 2, 0)).astype(np.int64)
    j0 = np.clip(np.floor(np.nan_to_num(fj)), 0, max(nx_s - 2, 0)).astype(np.int64)
    di = np.clip(np.nan_to_num(fi) - i0, 0, 1) if ny_s > 1 else np.zeros_like(fi)
    dj = np.clip(np.nan_to_num(fj) - j0, 0, 1) if nx_s > 1 else np.zeros_like(fj)
    i1, j1 = np.minimum(i0 + 1, ny_s - 1), np.minimum(j0 + 1, nx_s - 1)
    idx = np.stack([i0 * nx_s + j0, i0 * nx_s + j1, i1 * nx_s + j0, i1 * nx_s + j1], axis=1)
    w = np.stack([(1 - di) * (1 - dj), (1 - di) * dj, di * (1 - dj), di * dj], axis=1)
    w[~(np.isfinite(fi) & np.isfinite(fj))] = 0.0
    return Weights(idx, w.astype(np.float32), lat_t.shape)


def _frac_index(coord: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Fractional index of q in a monotone 1-D coordinate (either direction); NaN outside (half a step)."""
    if coord.size == 1:
        return np.where(np.abs(q - coord[0]) < 1e-9, 0.0, np.nan)
    asc = coord[-1] > coord[0]
    c = coord if asc else coord[::-1]
    f = np.interp(q, c, np.arange(c.size, dtype=float))
    step = np.abs(np.diff(c)).max()
    outside = (q < c[0] - step / 2) | (q > c[-1] + step / 2)
    if not asc:
        f = (c.size - 1) - f
    return np.where(outside, np.nan, f)


def _curvilinear_weights(lon_s: np.ndarray, lat_s: np.ndarray, grid: Grid, method: str) -> Weights:
    from scipy.spatial import Delaunay, cKDTree

    xs, ys = grid.project(lon_s.ravel(), lat_s.ravel())
    pts = np.column_stack([xs, ys])
    xx, yy = np.meshgrid(grid.x, grid.y)
    q = np.column_stack([xx.ravel(), yy.ravel()])
    shape = (grid.ny, grid.nx)
    if method == "nearest":
        dist, idx = cKDTree(pts).query(q)
        spacing = np.median(cKDTree(pts).query(pts, k=2)[0][:, 1])
        return Weights(idx[:, None], (dist <= 1.5 * spacing).astype(np.float32)[:, None], shape)
    tri = Delaunay(pts)
    simplex = tri.find_simplex(q)
    inside = simplex >= 0
    s = np.where(inside, simplex, 0)
    trans = tri.transform[s]
    b = np.einsum("nij,nj->ni", trans[:, :2], q - trans[:, 2])
    w = np.column_stack([b, 1 - b.sum(axis=1)])
    w[~inside] = 0.0
    return Weights(tri.simplices[s].astype(np.int64), np.clip(w, 0, 1).astype(np.float32), shape)


def to_hourly(da: xr.DataArray, times: np.ndarray, how: str = "exact") -> xr.DataArray:
    """Align a source's time axis to the store's hourly UTC axis.

    `exact`: reindex (hours absent from the source become NaN). `ceil`: round each time up to the hour (a
    satellite overpass at 05:30 is first usable at 06:00) and average several in the same hour.
    """
    if "time" not in da.dims:
        raise DataError(f"{da.name}: no time dimension")
    if how == "ceil":
        t = np.asarray(da["time"].values, "datetime64[ns]")
        hour = np.timedelta64(3600 * 10**9, "ns")
        rem = (t - np.datetime64(0, "ns")) % hour
        up = np.where(rem > np.timedelta64(0, "ns"), t - rem + hour, t)
        da = da.assign_coords(time=up).groupby("time").mean() if np.unique(up).size < up.size \
            else da.assign_coords(time=up)
    return da.reindex(time=times)


def regrid_field(da: xr.DataArray, grid: Grid, times: np.ndarray | None = None, method: str = "linear",
                 how: str = "exact", weights: Weights | None = None, with_valid: bool = False) -> Any:
    """A gridded source variable -> numpy [T, Y, X] (or [Y, X] without time) float32 on `grid`."""
    w = weights if weights is not None else source_weights(da, grid, method)
    if times is not None and "time" in da.dims:
        da = to_hourly(da, times, how)
    spatial = [d for d in da.dims if d != "time"]
    if len(spatial) != 2:
        raise DataError(f"{da.name}: expected 2 spatial dimensions, got {spatial}")
    latn = _find(da, LAT_NAMES)
    lat_dims = da[latn].dims
    order = (["time"] if "time" in da.dims else []) + (
        list(lat_dims) if len(lat_dims) == 2 else [lat_dims[0], next(d for d in spatial if d != lat_dims[0])])
    return w.apply(da.transpose(*order).values, with_valid=with_valid)


def check_overlap(values: np.ndarray, name: str) -> None:
    """Raise `OutOfDomainError` if a regridded field has no finite value at all (source misses the grid)."""
    if values.size and not np.isfinite(values).any():
        raise OutOfDomainError(f"{name}: the source does not overlap the grid (all values missing after "
                               "regridding)")


# ---- emissions -------------------------------------------------------------------------------------------
EMIS_SPECIES = ("nox", "so2", "voc", "nh3", "pm25")


def local_calendar(times: np.ndarray, utc_offset: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                        np.ndarray]:
    """(hour 0-23, weekday Mon=0, month 0-11, year) of each UTC time in local time."""
    from features.calendar import parse_utc_offset

    local = np.asarray(times, "datetime64[ns]") + parse_utc_offset(utc_offset).astype("timedelta64[ns]")
    days = local.astype("datetime64[D]")
    hour = ((local - days) // np.timedelta64(1, "h")).astype(np.int64)
    weekday = (days.astype(np.int64) + 3) % 7
    months = local.astype("datetime64[M]").astype(np.int64)
    return hour, weekday, months % 12, months // 12 + 1970


def temporal_factors(profile_hour: np.ndarray, profile_weekday: np.ndarray, profile_month: np.ndarray,
                     times: np.ndarray, utc_offset: str | None) -> np.ndarray:
    """[T, sector] multiplicative factors from [sector, 24], [sector, 7], [sector, 12] profiles."""
    hour, wd, month, _ = local_calendar(times, utc_offset)
    return (np.asarray(profile_hour)[:, hour] * np.asarray(profile_weekday)[:, wd]
            * np.asarray(profile_month)[:, month]).T.astype(np.float32)


def emissions_on_grid(maps: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """[sector, Y, X] annual-mean maps x [T, sector] factors -> [T, Y, X] float32."""
    s, ny, nx = maps.shape
    return (factors.astype(np.float32) @ maps.reshape(s, ny * nx).astype(np.float32)).reshape(-1, ny, nx)


def station_density_proxy(grid: Grid, lon: Any, lat: Any, sigma_km: float = 10.0,
                          mean_over: Grid | None = None) -> np.ndarray:
    """[Y, X] spatial proxy: a Gaussian kernel density of monitoring stations (urban-ness), mean 1 over the
    grid, or over `mean_over` (a model's training grid, so that a grid grown around it keeps its values)."""
    def density(g: Grid) -> np.ndarray:
        sx, sy = g.project(lon, lat)
        yy, xx = np.meshgrid(g.y, g.x, indexing="ij")
        d2 = (yy[..., None] - np.atleast_1d(sy)) ** 2 + (xx[..., None] - np.atleast_1d(sx)) ** 2
        return np.exp(-d2 / (2 * (sigma_km * 1000) ** 2)).sum(-1) + 0.05

    dens = density(grid)
    return (dens / (density(mean_over) if mean_over is not None else dens).mean()).astype(np.float32)


def _norm(a: list[float]) -> np.ndarray:
    a = np.asarray(a, float)
    return a / a.mean()


_H_TRAFFIC = [.4, .3, .25, .25, .3, .5, .9, 1.5, 1.8, 1.4, 1.1, 1.1, 1.1, 1.1, 1.1, 1.2, 1.4, 1.7, 1.8, 1.4, 1.0,
              .8, .6, .5]
_H_DAY = [.7, .7, .7, .7, .7, .75, .85, 1.0, 1.15, 1.25, 1.3, 1.3, 1.3, 1.3, 1.3, 1.25, 1.2, 1.1, 1.0, .9, .85,
          .8, .75, .7]
_H_RESID = [.6, .5, .5, .5, .6, .9, 1.4, 1.6, 1.3, 1.0, .9, .9, 1.0, .9, .9, .9, 1.0, 1.3, 1.6, 1.7, 1.5, 1.2,
            .9, .7]
_H_POWER = [.9, .88, .86, .85, .86, .9, .97, 1.05, 1.1, 1.1, 1.1, 1.1, 1.08, 1.08, 1.08, 1.08, 1.08, 1.1, 1.12,
            1.1, 1.05, 1.0, .95, .92]
_M_HEATING = [1.6, 1.5, 1.2, .9, .7, .6, .6, .6, .7, .9, 1.2, 1.6]
_M_FLAT = [1.0] * 12
_M_AGRI = [.6, .6, .9, 1.2, 1.3, 1.3, 1.3, 1.2, 1.1, .9, .8, .6]
_W_WORK = [1.05, 1.05, 1.05, 1.05, 1.05, .9, .85]
_W_FLAT = [1.0] * 7


def default_profiles(sectors: list[str]) -> dict[str, np.ndarray]:
    """Default temporal profiles (mean 1; local hour 0-23, weekday Mon=0, month Jan=0) for MEIC sectors."""
    table = {"power": (_H_POWER, _W_FLAT, _M_HEATING), "industry": (_H_DAY, _W_WORK, _M_FLAT),
             "residential": (_H_RESID, _W_FLAT, _M_HEATING), "transportation": (_H_TRAFFIC, _W_WORK, _M_FLAT),
             "solvent use": (_H_DAY, _W_WORK, _M_FLAT), "agriculture": (_H_DAY, _W_FLAT, _M_AGRI)}
    rows = [table.get(str(s).strip().lower(), (_H_DAY, _W_FLAT, _M_FLAT)) for s in sectors]
    return {"hour": np.stack([_norm(r[0]) for r in rows]), "weekday": np.stack([_norm(r[1]) for r in rows]),
            "month": np.stack([_norm(r[2]) for r in rows])}
