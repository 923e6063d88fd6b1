"""Internal units, unit conversion and small meteorological formulas.

Public API:
    INTERNAL_UNITS: dict[str, str]                       internal unit of every aqcast variable
    COMPASS16: dict[str, float]                          16-point compass -> degrees (direction wind blows FROM)
    convert(values, units, var, *, file=None) -> ndarray  source units -> internal units (raises UnitsError)
    wind_components(ws, dir_deg) -> (u, v)                meteorological convention
    relative_humidity(t_c, td_c) -> rh %                  Magnus formula (Alduchov & Eskridge 1996)
    parse_utc_offset(text) -> pandas.Timedelta
"""
from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pandas as pd

from features.errors import DataError, Problem, UnitsError

INTERNAL_UNITS: dict[str, str] = {
    **{p: "ug m-3" for p in ("pm25", "pm10", "so2", "no2", "co", "o3")},
    "t2m": "degC", "d2m": "degC", "sp": "hPa", "tp": "mm h-1",
    "u10": "m s-1", "v10": "m s-1", "ws": "m s-1", "blh": "m", "ssr": "W m-2", "rh": "%",
    "aod": "1", "no2col": "umol m-2",
    **{f"emis_{s}": "kg km-2 h-1" for s in ("nox", "so2", "voc", "nh3", "pm25")},
    "elevation": "m",
}

_DIRS = ["N", "NNE", "NE", "ENE", "E", "ESE", "SE", "SSE", "S", "SSW", "SW", "WSW", "W", "WNW", "NW", "NNW"]
COMPASS16: dict[str, float] = {d: 22.5 * i for i, d in enumerate(_DIRS)}

_AVOGADRO = 6.02214076e23


def _canon(units: str) -> str:
    """Normalise spelling: 'm s**-1', 'm/s', 'm s^-1' -> 'm s-1'; case kept except for whitespace."""
    u = units.strip().replace("**", "").replace("^", "").replace("µ", "u").replace("μ", "u")
    u = re.sub(r"\s+", " ", u)
    u = re.sub(r"/\s*([A-Za-z]+)(\d*)", lambda m: f" {m.group(1)}-{m.group(2) or 1}", u)  # a/b2 -> a b-2
    return u.replace("  ", " ").strip()


def _lin(scale: float, offset: float = 0.0) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: x * scale + offset


_IDENT = _lin(1.0)
_TEMP = {"degC": _IDENT, "C": _IDENT, "deg C": _IDENT, "°C": _IDENT, "celsius": _IDENT, "Celsius": _IDENT,
         "K": _lin(1.0, -273.15), "kelvin": _lin(1.0, -273.15)}
_WIND = {"m s-1": _IDENT}
_MASS_CONC = {"ug m-3": _IDENT, "mg m-3": _lin(1e3), "kg m-3": _lin(1e9)}
_EMIS = {"kg km-2 h-1": _IDENT, "kg m-2 s-1": _lin(1e6 * 3600.0), "g m-2 s-1": _lin(1e3 * 3600.0),
         "t km-2 h-1": _lin(1e3), "kg km-2 hr-1": _IDENT}
_DIMLESS = {"1": _IDENT, "": _IDENT, "~": _IDENT, "dimensionless": _IDENT, "-": _IDENT}

# accepted source units per internal variable (after `_canon`)
_TABLE: dict[str, dict[str, Callable[[np.ndarray], np.ndarray]]] = {
    "t2m": _TEMP, "d2m": _TEMP,
    "sp": {"hPa": _IDENT, "mbar": _IDENT, "mb": _IDENT, "Pa": _lin(0.01), "kPa": _lin(10.0)},
    "tp": {"mm": _IDENT, "mm h-1": _IDENT, "mm hr-1": _IDENT, "m": _lin(1e3), "m h-1": _lin(1e3),
           "kg m-2": _IDENT, "kg m-2 s-1": _lin(3600.0)},
    "u10": _WIND, "v10": _WIND, "ws": _WIND,
    "blh": {"m": _IDENT, "km": _lin(1e3)},
    "ssr": {"W m-2": _IDENT, "J m-2": _lin(1.0 / 3600.0)},  # J m-2 = accumulation over the hour
    "rh": {"%": _IDENT, "percent": _IDENT, "1": _lin(100.0)},
    "aod": _DIMLESS,
    "no2col": {"umol m-2": _IDENT, "mol m-2": _lin(1e6), "mmol m-2": _lin(1e3),
               "molecules cm-2": _lin(1e4 / _AVOGADRO * 1e6), "molec cm-2": _lin(1e4 / _AVOGADRO * 1e6)},
    "elevation": {"m": _IDENT, "km": _lin(1e3)},
    **{p: _MASS_CONC for p in ("pm25", "pm10", "so2", "no2", "co", "o3")},
    **{f"emis_{s}": _EMIS for s in ("nox", "so2", "voc", "nh3", "pm25")},
}


def convert(values: np.ndarray, units: str | None, var: str, *, file: str | None = None,
            source_var: str | None = None) -> np.ndarray:
    """Convert `values` in `units` to the internal unit of `var`. Unknown/missing units -> UnitsError."""
    name = source_var or var
    if var not in _TABLE:
        raise UnitsError(Problem(f"variable {name!r} is not a known aqcast variable", file=file))
    if units is None:
        raise UnitsError(Problem(f"variable {name!r} has no 'units' attribute (expected e.g. "
                                 f"{next(iter(_TABLE[var]))!r})", file=file))
    fn = _TABLE[var].get(_canon(str(units)))
    if fn is None:
        accepted = ", ".join(repr(k) for k in _TABLE[var] if k)
        raise UnitsError(Problem(f"variable {name!r} has units {units!r} which cannot be converted to "
                                 f"{INTERNAL_UNITS[var]!r} (accepted: {accepted})", file=file))
    return fn(np.asarray(values, dtype=np.float64))


def wind_components(ws: np.ndarray, dir_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) towards east/north from speed and the direction the wind blows FROM (degrees clockwise from N)."""
    rad = np.deg2rad(np.asarray(dir_deg, dtype=np.float64))
    ws = np.asarray(ws, dtype=np.float64)
    u = -ws * np.sin(rad)
    v = -ws * np.cos(rad)
    # exact zeros for cardinal directions (sin(pi) = 1.2e-16 otherwise)
    u[np.isclose(u, 0.0, atol=1e-9)] = 0.0
    v[np.isclose(v, 0.0, atol=1e-9)] = 0.0
    return u, v


def relative_humidity(t_c: np.ndarray, td_c: np.ndarray) -> np.ndarray:
    """RH (%) from temperature and dew point (degC), Magnus over water; clipped to [0, 100]."""
    t = np.asarray(t_c, dtype=np.float64)
    td = np.asarray(td_c, dtype=np.float64)
    a, b = 17.625, 243.04
    rh = 100.0 * np.exp(a * td / (b + td) - a * t / (b + t))
    return np.clip(rh, 0.0, 100.0)


def parse_utc_offset(text: str) -> pd.Timedelta:
    """'+08:00' / '-0530' / 'Z' / 'UTC' -> Timedelta (local = UTC + offset)."""
    s = str(text).strip()
    if s.upper() in ("Z", "UTC", "+00:00", "-00:00"):
        return pd.Timedelta(0)
    m = re.fullmatch(r"([+-])(\d{2}):?(\d{2})", s)
    if not m or int(m.group(2)) > 14 or int(m.group(3)) >= 60:
        raise DataError(Problem(f"invalid UTC offset {text!r}: expected '+HH:MM' or '-HH:MM' (e.g. '+08:00')"))
    sign = 1 if m.group(1) == "+" else -1
    return sign * pd.Timedelta(hours=int(m.group(2)), minutes=int(m.group(3)))
