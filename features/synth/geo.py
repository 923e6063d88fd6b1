"""The synthetic landscape around Beijing: grid, terrain, city, roads, villages, farmland and forest.

Everything here is a smooth analytic function of lon/lat (plus a little seeded texture), so the same
`nx, ny, res_km` always give the same landscape. Geography is a caricature of the real one: mountains to
the west (Xishan) and north (Jundu), the plain opening to the south-east, a ring-and-radial city centred on
Tiananmen with satellite towns.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from features.grid import Grid

CITY_LON, CITY_LAT = 116.397, 39.909  # Tiananmen
DOMAIN_LON, DOMAIN_LAT = 116.4, 40.0  # domain centre
PROJ_LON, PROJ_LAT = 116.0, 40.0  # projection centre (+proj=laea +lat_0=40 +lon_0=116)
TOWNS = {  # satellite towns: (lon, lat, weight, radius km)
    "Changping": (116.23, 40.22, 0.35, 3.5), "Shunyi": (116.65, 40.13, 0.35, 3.5),
    "Tongzhou": (116.66, 39.91, 0.45, 4.0), "Daxing": (116.34, 39.73, 0.4, 3.5),
    "Huairou": (116.63, 40.32, 0.2, 2.5), "Mentougou": (116.10, 39.94, 0.2, 2.0),
}
RING_RADII_KM = (3.0, 5.0, 8.0, 11.5, 17.0)  # 2nd .. 6th ring road (roughly)
N_RADIALS = 8


def make_grid(nx: int = 32, ny: int = 32, res_km: float = 3.0) -> Grid:
    """A grid of ny x nx cells centred near (116.4E, 40.0N) in the aqcast LAEA convention."""
    res_m = round(res_km * 1000)
    probe = Grid(lon_0=PROJ_LON, lat_0=PROJ_LAT, res_m=res_m, x0=0.0, y0=0.0, nx=1, ny=1)
    cx, cy = probe.project(DOMAIN_LON, DOMAIN_LAT)
    x0 = round((float(cx) - (nx - 1) / 2 * res_m) / res_m) * res_m
    y0 = round((float(cy) - (ny - 1) / 2 * res_m) / res_m) * res_m
    return Grid(lon_0=PROJ_LON, lat_0=PROJ_LAT, res_m=res_m, x0=float(x0), y0=float(y0), nx=nx, ny=ny)


def _sig(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


@dataclass
class Landscape:
    """Static fields on the grid (all (ny, nx) float64 unless noted)."""

    grid: Grid
    lon: np.ndarray
    lat: np.ndarray
    xkm: np.ndarray  # east of the city centre, km
    ykm: np.ndarray  # north of the city centre, km
    elevation: np.ndarray  # m
    mountain: np.ndarray  # 0 plain .. 1 mountains
    urban: np.ndarray  # 0 .. 1 built-up fraction
    roads: np.ndarray  # road-traffic density proxy (max 1)
    villages: np.ndarray  # rural population proxy
    cropland: np.ndarray  # 0 .. 1
    forest: np.ndarray  # 0 .. 1

    @property
    def cell_km2(self) -> float:
        """Cell area in km2."""
        return (self.grid.res_m / 1000.0) ** 2


def make_landscape(grid: Grid, seed: int) -> Landscape:
    """Build the landscape; `seed` only adds small-scale texture (ridges, villages)."""
    rng = np.random.default_rng([seed, 11])
    lon, lat = grid.centres_lonlat()
    cx, cy = grid.project(CITY_LON, CITY_LAT)
    xx, yy = np.meshgrid(grid.x, grid.y)
    xkm, ykm = (xx - float(cx)) / 1000.0, (yy - float(cy)) / 1000.0
    sigma_cells = max(1.0, 4.5 / (grid.res_m / 1000.0))
    tex = gaussian_filter(rng.standard_normal(grid.shape), sigma_cells, mode="reflect")
    tex /= tex.std() + 1e-12
    # mountains: west of ~116.17E and north of ~40.27N, the plain opening to the south-east
    west = _sig((116.17 - lon) * 22.0)
    north = _sig((lat - 40.27) * 28.0)
    mountain = np.clip(west + north - west * north, 0.0, 1.0)
    elevation = 35.0 + 20.0 * (lat - 39.6) / 0.8 + mountain * (650.0 + 250.0 * tex) \
        + 500.0 * mountain * _sig((116.0 - lon) * 15 + (lat - 40.45) * 15)
    elevation = np.maximum(elevation, 10.0)
    r = np.hypot(xkm, ykm)
    urban = np.exp(-0.5 * (r / 8.0) ** 2) + 0.35 * np.exp(-0.5 * (r / 16.0) ** 2)
    for tlon, tlat, w, rad in TOWNS.values():
        tx, ty = grid.project(tlon, tlat)
        d = np.hypot(xx - float(tx), yy - float(ty)) / 1000.0
        urban = urban + w * np.exp(-0.5 * (d / rad) ** 2)
    urban = np.clip(urban, 0.0, 1.0) * (1.0 - 0.8 * mountain)
    roads = np.zeros(grid.shape)
    for rad in RING_RADII_KM:
        roads += np.exp(-0.5 * ((r - rad) / 1.0) ** 2)
    theta = np.arctan2(ykm, xkm)
    for k in range(N_RADIALS):
        th = k * 2 * np.pi / N_RADIALS + np.pi / 8
        along = r * np.cos(theta - th)
        perp = r * np.abs(np.sin(theta - th))
        roads += np.where(along > 0, np.exp(-0.5 * (perp / 1.0) ** 2) * np.exp(-along / 40.0), 0.0)
    roads = roads * (1.0 - 0.7 * mountain) * (0.3 + 0.7 * np.exp(-r / 20.0)) + 0.25 * urban
    roads /= roads.max()
    plain = 1.0 - mountain
    villages = plain * (1.0 - urban) * np.clip(1.0 + 0.5 * tex, 0.2, None)
    cropland = np.clip(plain * (1.0 - 1.3 * urban), 0.0, 1.0)
    forest = mountain * np.clip(0.8 + 0.2 * tex, 0.3, 1.0)
    return Landscape(grid=grid, lon=lon, lat=lat, xkm=xkm, ykm=ykm, elevation=elevation, mountain=mountain,
                     urban=urban, roads=roads, villages=villages, cropland=cropland, forest=forest)


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], res_km: float,
                 scale_km: float = 20.0) -> np.ndarray:
    """Zero-mean, unit-std random field smooth on `scale_km`."""
    f = gaussian_filter(rng.standard_normal(shape), max(1.0, scale_km / res_km), mode="wrap")
    return (f - f.mean()) / (f.std() + 1e-12)
