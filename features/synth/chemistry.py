"""Compact gas and aerosol chemistry on mixed-layer / residual-layer concentrations (ug m-3), hourly steps.

Tracers (mass units): nox (as NO2), ox (= O3 + NO2, as O3), so2, voc, nhx (NH3 + NH4, as NH3), tno3
(HNO3 + nitrate, as NO3), so4, co, ppm (primary PM2.5), soa, pmc (coarse PM).
- NO / NO2 / O3 split by the photostationary state of Ox and NOx (titration by fresh NO at night).
- O3 production P = p0 j f(T) N V^2 / (V^2 + (kappa N)^2): NOx-limited (dP/dN > 0) where V > kappa N,
  VOC-limited (dP/dN < 0) where V < kappa N (kappa ~ the VOC/NOx mass ratio of the regime transition).
- SO2 -> sulfate (gas phase with sunlight + heterogeneous in humid air), NOx -> nitric acid (OH by day,
  N2O5 hydrolysis at humid nights), VOC -> SOA (8 % mass yield).
- Inorganic aerosol: sulfate fully neutralised first, then NH4NO3 from free NH3, less in warm dry air.
"""
from __future__ import annotations

import numpy as np

TRACERS = ("nox", "ox", "so2", "voc", "nhx", "tno3", "so4", "co", "ppm", "soa", "pmc")
IX = {k: i for i, k in enumerate(TRACERS)}
M_NO2, M_O3, M_SO2, M_SO4, M_NO3, M_NH3, M_NH4 = 46.0, 48.0, 64.0, 96.0, 62.0, 17.0, 18.0
UG_PER_PPB = {"no2": M_NO2 / 24.45, "o3": M_O3 / 24.45}  # 25 degC, 1013 hPa
J_NO2_MAX = 8.5e-3  # s-1, clear-sky summer noon
K_NO_O3 = 4.3e-4  # ppb-1 s-1 at 298 K
P0 = 1.0  # ppb h-1 per (ug m-3 NOx) at full sun, 25 degC, optimal VOC/NOx
KAPPA = 2.0  # VOC/NOx mass ratio of the NOx-/VOC-limited transition
SOA_YIELD = 0.08
PRIMARY_NO2 = 0.1  # NO2 fraction of emitted NOx
# dry deposition velocities (m s-1); nhx/tno3 take gas- and particle-phase values
VD = {"nox": 0.001, "ox": 0.0035, "so2": 0.005, "voc": 0.0005, "so4": 0.001, "co": 0.0, "ppm": 0.001,
      "soa": 0.001, "pmc": 0.006}
VD_GAS = {"nhx": 0.010, "tno3": 0.025}
VD_PART = 0.001
# below-cloud scavenging weights (x 0.3 tp^0.7 h-1)
WASHOUT = np.array([0.0, 0.0, 0.5, 0.0, 1.0, 1.5, 1.0, 0.0, 1.0, 1.0, 1.2])


def photolysis(ssr: np.ndarray) -> np.ndarray:
    """Photolysis scale 0..~1.2 from surface solar radiation (W m-2)."""
    return np.clip(ssr / 900.0, 0.0, 1.25)


def pss(nox: np.ndarray, ox: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(no2, o3) in ug m-3 from NOx (as NO2) and Ox (as O3) under the photostationary state."""
    n = nox / UG_PER_PPB["no2"]
    o = ox / UG_PER_PPB["o3"]
    s = n + o + j * (J_NO2_MAX / K_NO_O3)
    disc = np.sqrt(np.maximum(s * s - 4.0 * n * o, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        x = np.where(s > 0, 2.0 * n * o / (s + disc), 0.0)  # NO2, ppb (stable root)
    x = np.minimum(x, np.minimum(n, o))
    return x * UG_PER_PPB["no2"], (o - x) * UG_PER_PPB["o3"]


def partition(c: np.ndarray, t_c: np.ndarray, rh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(particulate nitrate ug m-3 as NO3, particulate ammonium ug m-3 as NH4)."""
    so4 = c[IX["so4"]] / M_SO4
    tno3 = c[IX["tno3"]] / M_NO3
    nhx = c[IX["nhx"]] / M_NH3
    nh4_s = np.minimum(nhx, 2.0 * so4)
    phi = 1.0 / (1.0 + np.exp((t_c - (12.0 + 18.0 * rh)) / 3.5))
    pno3 = np.minimum(tno3, nhx - nh4_s) * phi
    return pno3 * M_NO3, (nh4_s + pno3) * M_NH4


def pm25(c: np.ndarray, t_c: np.ndarray, rh: np.ndarray) -> np.ndarray:
    """PM2.5 (ug m-3): primary + sulfate + nitrate + ammonium + SOA."""
    pno3, pnh4 = partition(c, t_c, rh)
    return c[IX["ppm"]] + c[IX["so4"]] + pno3 + pnh4 + c[IX["soa"]]


def gas_fractions(c: np.ndarray, t_c: np.ndarray, rh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gas-phase fractions of nhx and tno3."""
    pno3, pnh4 = partition(c, t_c, rh)
    with np.errstate(invalid="ignore", divide="ignore"):
        fn = np.where(c[IX["nhx"]] > 0, 1.0 - pnh4 / M_NH4 * M_NH3 / c[IX["nhx"]], 1.0)
        ft = np.where(c[IX["tno3"]] > 0, 1.0 - pno3 / c[IX["tno3"]], 1.0)
    return np.clip(fn, 0.0, 1.0), np.clip(ft, 0.0, 1.0)


def o3_production(nox: np.ndarray, voc: np.ndarray, j: np.ndarray, t_c: np.ndarray) -> np.ndarray:
    """Net photochemical Ox production over one hour, ug m-3 (as O3)."""
    ft = np.clip(np.exp(0.05 * (t_c - 25.0)), 0.15, 1.8)
    v2 = voc * voc
    with np.errstate(invalid="ignore", divide="ignore"):
        g = np.where(v2 > 0, nox * v2 / (v2 + (KAPPA * nox) ** 2), 0.0)
    return P0 * j * ft * g * UG_PER_PPB["o3"]


def chem_step(c: np.ndarray, j: np.ndarray, t_c: np.ndarray, rh: np.ndarray) -> np.ndarray:
    """Advance concentrations c (tracer, y, x) by one hour; returns the new array (all >= 0)."""
    out = c.copy()
    wet = np.clip((rh - 0.45) / 0.5, 0.0, 1.0) ** 2
    fog = np.where(rh > 0.95, 0.05, 0.0)
    no2, o3 = pss(c[IX["nox"]], c[IX["ox"]], j)
    # SO2 -> sulfate
    lso2 = c[IX["so2"]] * -np.expm1(-(0.035 * j + 0.002 + 0.10 * wet + fog))
    out[IX["so2"]] -= lso2
    out[IX["so4"]] += lso2 * (M_SO4 / M_SO2)
    # NOx -> HNO3 (OH by day; N2O5 hydrolysis at night, needs O3 and wet aerosol)
    dark = np.clip(1.0 - 5.0 * j, 0.0, 1.0)
    k_n = 0.14 * j + 0.05 * np.clip((rh - 0.3) / 0.6, 0.0, 1.0) * dark * o3 / (o3 + 40.0)
    lnox = c[IX["nox"]] * -np.expm1(-k_n)
    out[IX["nox"]] -= lnox
    out[IX["tno3"]] += lnox * (M_NO3 / M_NO2)
    with np.errstate(invalid="ignore", divide="ignore"):
        f_no2 = np.where(c[IX["nox"]] > 0, no2 / c[IX["nox"]], 0.0)
    lox_n = np.minimum(lnox * f_no2 * (M_O3 / M_NO2), c[IX["ox"]])
    # Ox: production (NOx/VOC regime), photochemical loss, loss with the NO2 that became HNO3
    prod = o3_production(c[IX["nox"]], c[IX["voc"]], j, t_c)
    out[IX["ox"]] = (c[IX["ox"]] - lox_n + prod) * np.exp(-0.012 * j * (1.0 + rh))
    # VOC -> SOA, CO slow oxidation
    lvoc = c[IX["voc"]] * -np.expm1(-(0.05 * j + 0.004))
    out[IX["voc"]] -= lvoc
    out[IX["soa"]] += SOA_YIELD * lvoc
    out[IX["co"]] *= np.exp(-0.0004)
    return out


def dry_velocity(c: np.ndarray, t_c: np.ndarray, rh: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Dry deposition velocity (tracer, y, x), m s-1."""
    fn, ft = gas_fractions(c, t_c, rh)
    vd = np.zeros_like(c)
    for k, v in VD.items():
        vd[IX[k]] = v
    vd[IX["ox"]] = VD["ox"] * (0.55 + 0.45 * np.clip(j, 0, 1))  # stomatal uptake by day
    vd[IX["nhx"]] = VD_GAS["nhx"] * fn + VD_PART * (1 - fn)
    vd[IX["tno3"]] = VD_GAS["tno3"] * ft + VD_PART * (1 - ft)
    return vd


def washout_fraction(tp: np.ndarray) -> np.ndarray:
    """Fraction of each tracer removed by rain in one hour (tracer, y, x)."""
    lam = 0.3 * np.power(np.maximum(tp, 0.0), 0.7)
    return -np.expm1(-WASHOUT[:, None, None] * lam[None])
