"""Gridded anthropogenic (and biogenic) emissions: sector maps x hour/weekday/month profiles.

Sector split from China's national MEIC totals for 2015 (Zheng et al. 2018, ACP 18:14095; the values of
`meic_china_sector_totals_2010_2017.csv`, embedded here so the synthetic world needs no external file).
Domain totals are of the order of Beijing's own inventory scaled to the ~9,000 km2 domain.
Profiles are indexed by LOCAL (UTC+08:00) hour, weekday (0 = Monday) and month (0 = January).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.synth.geo import Landscape

SECTORS = ("power", "industry", "residential", "transport", "solvent", "agriculture")
SPECIES = ("nox", "so2", "voc", "nh3", "pm25", "co", "pmc")  # pmc: coarse PM (PM10 - PM2.5), internal
FILE_SPECIES = ("nox", "so2", "voc", "nh3", "pm25")  # what emissions.nc carries (the contract)
ANTHRO = SECTORS  # all of these are anthropogenic; biogenic VOC is natural and never cut

# MEIC 2015 national totals, Tg/yr: Power, Industry, Residential, Transportation, Solvent Use, Agriculture
MEIC_2015_TG = {
    "nox": (5.08048, 9.72986, 0.91149, 7.97394, 0.0, 0.0),
    "so2": (3.93461, 9.80794, 2.86287, 0.315863, 0.0, 0.0),
    "voc": (0.07744, 9.36178, 4.21947, 5.38748, 9.45196, 0.0),
    "nh3": (0.0, 0.36178, 0.3542, 0.04122, 0.0, 9.72913),
    "pm25": (0.64286, 4.36057, 3.64126, 0.49707, 0.0, 0.0),
    "co": (4.46875, 56.2315, 63.9943, 28.8848, 0.0, 0.0),
}
# coarse PM (fugitive/road dust): share by sector (no MEIC species; PM10-PM2.5 ~ 0.9 x PM2.5 nationally)
PMC_SHARE = (0.05, 0.45, 0.15, 0.35, 0.0, 0.0)
# domain totals, kt/yr (Beijing-like city of ~9,000 km2 around 2015)
DOMAIN_KT = {"nox": 300.0, "so2": 95.0, "voc": 320.0, "nh3": 80.0, "pm25": 110.0, "co": 2200.0, "pmc": 80.0}
BIOGENIC_VOC_KT = 250.0  # rate at reference conditions (30 degC, full sun; ~6 kg km-2 h-1 over forest)

POWER_PLANTS = {  # name: (lon, lat, weight)
    "Synthetic power plant Gaojing": (116.13, 39.94, 0.30),
    "Synthetic power plant Gaobeidian": (116.54, 39.87, 0.30),
    "Synthetic power plant Shunyi": (116.62, 40.08, 0.15),
    "Synthetic power plant Langfang": (116.48, 39.62, 0.25),
}
INDUSTRY_CLUSTERS = {  # name: (lon, lat, weight, radius km)
    "Synthetic industry Yizhuang": (116.51, 39.79, 0.30, 3.0),
    "Synthetic industry Shijingshan": (116.18, 39.91, 0.20, 2.5),
    "Synthetic industry Tongzhou": (116.72, 39.84, 0.20, 3.0),
    "Synthetic industry Daxing south": (116.33, 39.64, 0.30, 4.0),
}


def _norm(p: list[float] | np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    return p / p.mean()


def profiles() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hour (sector, 24), weekday (sector, 7), month (sector, 12)), each row mean 1, local time."""
    h = np.arange(24)
    day = np.where((h >= 7) & (h <= 19), 1.0, 0.0)
    rush = np.exp(-0.5 * ((h - 8) / 1.3) ** 2) + np.exp(-0.5 * ((h - 18) / 1.5) ** 2)
    hour = np.stack([
        _norm(0.85 + 0.25 * day),  # power
        _norm(0.75 + 0.45 * day),  # industry
        _norm(0.5 + np.exp(-0.5 * ((h - 7) / 1.5) ** 2) + 1.3 * np.exp(-0.5 * ((h - 19) / 2.0) ** 2)
              + 0.25 * ((h >= 20) | (h <= 5))),  # residential: cooking + evening/night heating
        _norm(0.25 + 0.5 * day + 1.2 * rush),  # transport (heavy trucks at night keep a floor)
        _norm(0.3 + 1.0 * day),  # solvent
        _norm(0.3 + np.clip(np.sin((h - 6) / 12 * np.pi), 0, None)),  # agriculture (temperature-driven)
    ])
    wk_work = np.array([1.05, 1.05, 1.05, 1.05, 1.05, 0.9, 0.85])
    weekday = np.stack([_norm(np.ones(7)), _norm(wk_work), _norm(np.ones(7)), _norm([1.06] * 5 + [0.95, 0.82]),
                        _norm(wk_work), _norm(np.ones(7))])
    month = np.stack([
        _norm([1.15, 1.05, 1.0, 0.9, 0.9, 1.0, 1.1, 1.1, 0.95, 0.9, 1.0, 1.15]),
        _norm([0.95, 0.75, 1.0, 1.05, 1.05, 1.05, 1.0, 1.0, 1.05, 1.05, 1.05, 1.0]),  # Spring Festival dip
        _norm([2.3, 2.0, 1.2, 0.5, 0.35, 0.3, 0.3, 0.3, 0.35, 0.5, 1.5, 2.2]),  # heating season
        _norm([1.0] * 12),
        _norm([0.8, 0.75, 0.9, 1.0, 1.1, 1.2, 1.25, 1.2, 1.1, 1.0, 0.9, 0.8]),
        _norm([0.35, 0.4, 0.8, 1.4, 1.5, 1.6, 1.5, 1.3, 1.1, 0.9, 0.7, 0.45]),
    ])
    return hour, weekday, month


def _weights(land: Landscape) -> dict[str, np.ndarray]:
    """Normalised (sum 1) spatial weights per sector."""
    g = land.grid
    xx, yy = np.meshgrid(g.x, g.y)
    power = np.zeros(g.shape)
    for lon, lat, w in POWER_PLANTS.values():
        x, y = g.project(lon, lat)
        c, r = round((float(x) - g.x0) / g.res_m), round((float(y) - g.y0) / g.res_m)
        if 0 <= r < g.ny and 0 <= c < g.nx:  # plants outside a small test grid are left out
            power[r, c] += w
    ind = 0.08 * land.urban + 0.02 * land.villages
    for lon, lat, w, rad in INDUSTRY_CLUSTERS.values():
        px, py = g.project(lon, lat)
        d = np.hypot(xx - float(px), yy - float(py)) / 1000.0
        ind = ind + w * np.exp(-0.5 * (d / rad) ** 2)
    out = {
        "power": power if power.sum() > 0 else ind.copy(),
        "industry": ind,
        "residential": 0.6 * land.urban + 0.9 * land.villages + 0.05,
        "transport": land.roads + 0.1 * land.urban,
        "solvent": land.urban + 0.5 * ind / ind.max(),
        "agriculture": land.cropland + 0.02,
    }
    return {k: v / v.sum() for k, v in out.items()}


@dataclass
class Inventory:
    """maps (sector, species, y, x) in kg km-2 h-1 (annual mean) + local-time profiles + biogenic map."""

    maps: np.ndarray
    hour: np.ndarray
    weekday: np.ndarray
    month: np.ndarray
    biogenic_voc: np.ndarray  # (y, x) kg km-2 h-1 at 30 degC and full sun
    sources: list[tuple[str, str, str, float, float]]  # (id, name, sector, lon, lat)

    def factors(self, local_hour: int, weekday: int, month0: int) -> np.ndarray:
        """Temporal factor per sector at one local time."""
        return self.hour[:, local_hour] * self.weekday[:, weekday] * self.month[:, month0]


def sector_shares(species: str) -> np.ndarray:
    """Share of each sector in the domain total of `species` (MEIC 2015 national split)."""
    v = np.asarray(PMC_SHARE if species == "pmc" else MEIC_2015_TG[species], dtype=float)
    return v / v.sum()


def make_inventory(land: Landscape) -> Inventory:
    """Build the annual-mean maps from MEIC shares, domain totals and spatial proxies."""
    w = _weights(land)
    area = land.cell_km2
    n_cells = land.grid.nx * land.grid.ny
    scale_area = n_cells * area / (32 * 32 * 9.0)  # totals are for the default 96 km x 96 km domain
    maps = np.zeros((len(SECTORS), len(SPECIES)) + land.grid.shape)
    for j, sp in enumerate(SPECIES):
        total_kg_h = DOMAIN_KT[sp] * 1e6 / 8760.0 * scale_area
        for i, sec in enumerate(SECTORS):
            maps[i, j] = sector_shares(sp)[i] * total_kg_h * w[sec] / area
    bio = land.forest / max(land.forest.sum(), 1e-9)
    biogenic = BIOGENIC_VOC_KT * 1e6 / 8760.0 * scale_area * bio / area
    hour, weekday, month = profiles()
    sources: list[tuple[str, str, str, float, float]] = []
    for k, (name, (lon, lat, _)) in enumerate(POWER_PLANTS.items()):
        sources.append((f"P{k + 1:02d}", name, "power", lon, lat))
    for k, (name, (lon, lat, _, _)) in enumerate(INDUSTRY_CLUSTERS.items()):
        sources.append((f"I{k + 1:02d}", name, "industry", lon, lat))
    return Inventory(maps=maps, hour=hour, weekday=weekday, month=month, biogenic_voc=biogenic, sources=sources)


def biogenic_factor(t2m_c: np.ndarray, ssr: np.ndarray) -> np.ndarray:
    """Guenther-like temperature x light dependence, 1 at 30 degC and 900 W m-2."""
    light = np.clip(ssr / 900.0, 0.0, 1.3)
    return np.exp(0.10 * (t2m_c - 30.0)) * light
