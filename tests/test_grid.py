"""Grid: round trips, stable ids, out-of-domain errors, 500 m grids; regridding helpers."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from features import regrid
from features.errors import OutOfDomainError
from features.grid import Grid

BJ_LON = np.array([116.407, 116.23, 116.17, 116.417, 116.339, 116.184, 116.628, 116.461, 116.287, 116.366])
BJ_LAT = np.array([40.003, 40.195, 40.292, 39.929, 39.929, 39.914, 40.328, 39.937, 39.987, 39.878])


@pytest.fixture(scope="module")
def grid() -> Grid:
    return Grid.from_extent(BJ_LON, BJ_LAT, res_km=3, margin_km=15)


def test_from_extent_covers_stations_with_margin(grid: Grid) -> None:
    assert grid.res_m == 3000 and (grid.lon_0, grid.lat_0) == (116.0, 40.0)
    assert grid.x0 % 3000 == 0 and grid.y0 % 3000 == 0
    x, y = grid.project(BJ_LON, BJ_LAT)
    assert x.min() - 15000 >= grid.x[0] - 1500 and x.max() + 15000 <= grid.x[-1] + 1500
    assert y.min() - 15000 >= grid.y[0] - 1500 and y.max() + 15000 <= grid.y[-1] + 1500
    assert np.all(np.diff(grid.y) > 0) and np.all(np.diff(grid.x) > 0)  # rows south->north, cols west->east


def test_round_trip_lonlat_cell_lonlat(grid: Grid) -> None:
    rng = np.random.default_rng(0)
    lon = rng.uniform(116.2, 116.6, 500)
    lat = rng.uniform(39.8, 40.3, 500)
    r, c = grid.lonlat_to_rowcol(lon, lat)
    clon, clat = grid.rowcol_to_lonlat(r, c)
    r2, c2 = grid.lonlat_to_rowcol(clon, clat)
    assert np.array_equal(r, r2) and np.array_equal(c, c2)
    # the point lies within the cell: projected offset from the centre at most half a cell
    x, y = grid.project(lon, lat)
    assert np.all(np.abs(x - grid.x[c]) <= 1500 + 1e-6) and np.all(np.abs(y - grid.y[r]) <= 1500 + 1e-6)
    # scalars give ints / floats
    rs, cs = grid.lonlat_to_rowcol(116.4, 40.0)
    assert isinstance(rs, int) and isinstance(cs, int)
    assert isinstance(grid.rowcol_to_lonlat(rs, cs)[0], float)
    lon2d, _ = grid.centres_lonlat()
    assert lon2d.shape == grid.shape and np.isclose(lon2d[r[0], c[0]], clon[0])


def test_cell_ids_stable_across_grids_with_same_crs(grid: Grid) -> None:
    other = Grid.from_extent(BJ_LON[:3], BJ_LAT[:3], res_km=3, margin_km=40)
    assert other.crs == grid.crs and (other.x0, other.nx) != (grid.x0, grid.nx)
    for lon, lat in zip(BJ_LON, BJ_LAT):
        a, b = grid.lonlat_to_rowcol(lon, lat), other.lonlat_to_rowcol(lon, lat)
        assert grid.cell_id(*a) == other.cell_id(*b)
        assert grid.cell_ids()[a] == grid.cell_id(*a)
        assert other.cell_id_to_rowcol(grid.cell_id(*a)) == b


def test_out_of_domain_errors(grid: Grid) -> None:
    with pytest.raises(OutOfDomainError, match="outside the grid.*lon=121.5000"):
        grid.lonlat_to_rowcol(121.5, 31.2)
    with pytest.raises(OutOfDomainError, match="2 coordinate"):
        grid.lonlat_to_rowcol([116.4, 0.0, 130.0], [40.0, 0.0, 50.0])
    with pytest.raises(OutOfDomainError):
        grid.lonlat_to_rowcol(np.nan, 40.0)
    with pytest.raises(OutOfDomainError):
        grid.rowcol_to_lonlat(grid.ny, 0)
    with pytest.raises(OutOfDomainError, match="malformed"):
        grid.cell_id_to_rowcol("3km_1_2")
    with pytest.raises(OutOfDomainError, match="500 m grid"):
        grid.cell_id_to_rowcol("500m_1_2")
    with pytest.raises(OutOfDomainError, match="outside"):
        grid.cell_id_to_rowcol("3000m_900_900")
    with pytest.raises(OutOfDomainError):
        regrid.station_cells(grid, [116.4, 121.5], [40.0, 31.2], names=["in", "far"])


def test_500m_grid() -> None:
    g = Grid.from_extent(BJ_LON, BJ_LAT, res_km=0.5, margin_km=5)
    assert g.res_m == 500 and g.x0 % 500 == 0
    r, c = g.lonlat_to_rowcol(BJ_LON, BJ_LAT)
    lon, lat = g.rowcol_to_lonlat(r, c)
    assert np.allclose(lon, BJ_LON, atol=0.004) and np.allclose(lat, BJ_LAT, atol=0.003)
    assert g.cell_id(int(r[0]), int(c[0])).startswith("500m_")
    assert g.nx * g.ny > 20 * 20


def test_json_round_trip(grid: Grid) -> None:
    g2 = Grid.from_json(grid.to_json())
    assert g2 == grid
    with pytest.raises(ValueError):
        Grid(lon_0=116, lat_0=40, res_m=3000, x0=1000.0, y0=0.0, nx=2, ny=2)  # x0 not snapped


def test_scatter_mean_and_distance(grid: Grid) -> None:
    lon = np.array([116.40, 116.4001, 116.2])
    lat = np.array([40.00, 40.0001, 40.2])
    r, c = regrid.station_cells(grid, lon, lat)
    assert (r[0], c[0]) == (r[1], c[1])
    vals = np.array([[10.0, 20.0, 5.0], [np.nan, 4.0, np.nan]])
    out = regrid.scatter_stations(vals, r, c, grid)
    assert out[0, r[0], c[0]] == 15.0 and out[1, r[0], c[0]] == 4.0 and np.isnan(out[1, r[2], c[2]])
    assert np.isfinite(out).sum() == 3
    d = regrid.distance_to_nearest_km(grid, lon, lat)
    assert d[r[2], c[2]] < 2.2 and d.max() > 20


def test_idw_vectorised_and_nan_aware(grid: Grid) -> None:
    vals = np.array([[1.0, 3.0], [np.nan, 3.0], [np.nan, np.nan]])
    out = regrid.idw(vals, [116.3, 116.5], [40.0, 40.1], grid)
    assert out.shape == (3, grid.ny, grid.nx)
    assert np.all((out[0] >= 1) & (out[0] <= 3)) and np.allclose(out[1], 3.0) and np.isnan(out[2]).all()


def test_bilinear_regular_and_curvilinear_exact_for_linear_fields(grid: Grid) -> None:
    lat = np.arange(41.0, 39.0, -0.05)  # descending, like the elevation npy
    lon = np.arange(115.5, 117.5, 0.05)
    field = 2.0 * lon[None, :] + 3.0 * lat[:, None]
    da = xr.DataArray(np.stack([field, field + 1]), dims=("time", "latitude", "longitude"),
                      coords={"latitude": lat, "longitude": lon})
    out = regrid.regrid_field(da, grid)
    glon, glat = grid.centres_lonlat()
    assert np.allclose(out[0], 2 * glon + 3 * glat, atol=1e-3) and np.allclose(out[1] - out[0], 1, atol=1e-4)
    # curvilinear: 2-D lon/lat coordinates on (y, x)
    lon2, lat2 = np.meshgrid(lon, lat)
    cda = xr.DataArray(field[None], dims=("time", "y", "x"),
                       coords={"lon": (("y", "x"), lon2), "lat": (("y", "x"), lat2)})
    out2 = regrid.regrid_field(cda, grid)
    assert np.allclose(out2[0], 2 * glon + 3 * glat, atol=2e-2)
    near = regrid.regrid_field(cda, grid, method="nearest")
    assert np.nanmax(np.abs(near[0] - (2 * glon + 3 * glat))) < 0.15


def test_satellite_valid_fraction(grid: Grid) -> None:
    lat = np.arange(39.5, 40.8, 0.1)
    lon = np.arange(115.8, 117.0, 0.1)
    a = np.full((1, lat.size, lon.size), 0.5)
    a[0, :, : lon.size // 2] = np.nan
    da = xr.DataArray(a, dims=("time", "latitude", "longitude"), coords={"latitude": lat, "longitude": lon})
    vals, valid = regrid.regrid_field(da, grid, with_valid=True)
    assert ((valid >= 0) & (valid <= 1)).all() and valid.min() == 0 and valid.max() == 1
    assert np.allclose(vals[valid > 0], 0.5) and np.isnan(vals[valid == 0]).all()
