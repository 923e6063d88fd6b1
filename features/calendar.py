"""Calendar forcings computed on the fly from UTC times, in the data's local time."""
from __future__ import annotations

import re
from typing import Any

import numpy as np

CALENDAR_VARS: tuple[str, ...] = ("hour_sin", "hour_cos", "doy_sin", "doy_cos", "weekend")
DEFAULT_UTC_OFFSET = "+08:00"
_OFFSET_RE = re.compile(r"^(?:UTC)?([+-])(\d{1,2}):?(\d{2})?$")


def parse_utc_offset(offset: str | None) -> np.timedelta64:
    """'+08:00' / '+0800' / '-05' / 'UTC' -> timedelta64[m]."""
    if offset is None or str(offset).strip().upper() in ("", "Z", "UTC", "+00:00"):
        return np.timedelta64(0, "m")
    m = _OFFSET_RE.match(str(offset).strip())
    if not m:
        raise ValueError(f"cannot parse UTC offset {offset!r}; expected e.g. '+08:00'")
    sign = 1 if m.group(1) == "+" else -1
    return np.timedelta64(sign * (int(m.group(2)) * 60 + int(m.group(3) or 0)), "m")


def calendar_features(times: Any, utc_offset: str | None = DEFAULT_UTC_OFFSET) -> np.ndarray:
    """[T, 5] float32: hour_sin, hour_cos, doy_sin, doy_cos, weekend (Sat/Sun = 1) in local time.

    `times` are UTC (datetime64 or anything numpy can convert); local = UTC + `utc_offset`.
    """
    t = np.asarray(times, dtype="datetime64[ns]").reshape(-1)
    local = t + parse_utc_offset(utc_offset).astype("timedelta64[ns]")
    days = local.astype("datetime64[D]")
    hour = (local - days).astype("timedelta64[m]").astype(np.float64) / 60.0
    years = days.astype("datetime64[Y]")
    doy = (days - years).astype(np.int64).astype(np.float64)  # 0-based day of year
    ylen = ((years + np.timedelta64(1, "Y")).astype("datetime64[D]") - years.astype("datetime64[D]"))
    ylen = ylen.astype(np.int64).astype(np.float64)
    weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    out = np.empty((t.size, len(CALENDAR_VARS)), np.float32)
    out[:, 0] = np.sin(2 * np.pi * hour / 24)
    out[:, 1] = np.cos(2 * np.pi * hour / 24)
    out[:, 2] = np.sin(2 * np.pi * doy / ylen)
    out[:, 3] = np.cos(2 * np.pi * doy / ylen)
    out[:, 4] = weekday >= 5
    return out


SOLAR_VARS: tuple[str, ...] = ("sun_cosz",)
COMPUTED_VARS: tuple[str, ...] = CALENDAR_VARS + SOLAR_VARS


def solar_cos_zenith(times: Any, lon: float, lat: float) -> np.ndarray:
    """[T] float32: cosine of the solar zenith angle at (lon, lat), clipped at 0 (night), from UTC times.

    NOAA's low-order Fourier fits for declination and the equation of time (error < 0.5 degree): the
    clear-sky sunlight that drives ozone photochemistry and the boundary layer, known for any future hour.
    """
    t = np.asarray(times, dtype="datetime64[ns]").reshape(-1)
    days = t.astype("datetime64[D]")
    hour = (t - days).astype("timedelta64[s]").astype(np.float64) / 3600.0
    doy = (days - days.astype("datetime64[Y]")).astype(np.int64).astype(np.float64)  # 0-based
    g = 2 * np.pi / 365.0 * (doy + (hour - 12) / 24)
    decl = (0.006918 - 0.399912 * np.cos(g) + 0.070257 * np.sin(g) - 0.006758 * np.cos(2 * g)
            + 0.000907 * np.sin(2 * g) - 0.002697 * np.cos(3 * g) + 0.00148 * np.sin(3 * g))
    eqt = 229.18 * (0.000075 + 0.001868 * np.cos(g) - 0.032077 * np.sin(g) - 0.014615 * np.cos(2 * g)
                    - 0.040849 * np.sin(2 * g))  # minutes
    solar_min = hour * 60 + eqt + 4 * lon
    ha = np.deg2rad(solar_min / 4 - 180)
    phi = np.deg2rad(lat)
    cosz = np.sin(phi) * np.sin(decl) + np.cos(phi) * np.cos(decl) * np.cos(ha)
    return np.maximum(cosz, 0.0).astype(np.float32)
