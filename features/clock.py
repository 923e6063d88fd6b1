"""The weather columns' clock: find months whose diurnal cycle runs whole hours late (or early) and realign them.

A logger whose clock drifts by an hour moves every weather column of a station file (temperature, pressure,
dew point, rain, wind) against the pollutants and against the sun. The sun fixes two cycles: temperature's
daily harmonic and the pressure tide's half-daily one. For each month of the record (local time, all stations
pooled) their phase is compared with the same calendar month in the first twelve months of the record, or of the
record a model was trained on (the reference: its clock is taken as right; it travels in the model's store
options, so a directory holding only a later year is judged against the model's clock, not its own); the two
lags, in hours, are averaged and rounded. A month is moved only when both lags agree with the rounded shift
within `TOLERANCE_H`; otherwise it is left as recorded and reported as undetermined. Realigning a month that
runs `k` hours late gives each of its hours the weather recorded `k` hours later (the month's last `k` hours take
the next month's first, or NaN at the record's end).

Measured on `../shared/data/beijing` (docs/decisions.md M50): every month from 2014-11 to 2016-02 runs one hour
late (lags 0.76-1.72 h); the 20 months before are on time (|lag| <= 0.55 h).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from features.errors import DataError
from features.units import parse_utc_offset

WEATHER_VARS: tuple[str, ...] = ("t2m", "d2m", "sp", "tp", "ws", "u10", "v10", "rh")  # share the logger's clock
PHASE_VARS: dict[str, int] = {"t2m": 1, "sp": 2}  # variable -> harmonic (per day) whose phase the sun sets
TOLERANCE_H = 0.75
MIN_DAYS = 10  # a month needs this many days with data at every hour to be judged
MAX_SHIFT_H = 3


def _local(times: np.ndarray, utc_offset: str) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(times) + parse_utc_offset(utc_offset)


def monthly_cycles(values: np.ndarray, local: pd.DatetimeIndex) -> pd.DataFrame:
    """Mean diurnal cycle [month 'YYYY-MM' x local hour 0..23] of a [station, time] array over stations and days;
    NaN where a month has fewer than `MIN_DAYS` days with data at that hour."""
    v = np.asarray(values, dtype=np.float64)
    n = np.isfinite(v).sum(axis=0)
    station_mean = np.where(n > 0, np.where(np.isfinite(v), v, 0.0).sum(axis=0) / np.maximum(n, 1), np.nan)
    frame = pd.DataFrame({"month": local.strftime("%Y-%m"), "day": local.normalize(), "hour": local.hour,
                          "value": station_mean})
    frame = frame.dropna(subset=["value"])
    mean = frame.pivot_table(index="month", columns="hour", values="value", aggfunc="mean")
    days = frame.pivot_table(index="month", columns="hour", values="day", aggfunc="nunique")
    mean = mean.reindex(columns=range(24))
    return mean.where(days.reindex(index=mean.index, columns=range(24)) >= MIN_DAYS)


def phase_hours(cycle: np.ndarray, harmonic: int) -> float:
    """Local time (hours) of the maximum of the cycle's `harmonic`-per-day component."""
    h = np.arange(24)
    x = cycle - cycle.mean()
    arg = 2 * np.pi * harmonic * h / 24
    return float(np.arctan2((x * np.sin(arg)).sum(), (x * np.cos(arg)).sum()) * 24 / (2 * np.pi * harmonic))


def _lag(x: float, ref: float, harmonic: int) -> float:
    period = 24 / harmonic
    return float((x - ref + period / 2) % period - period / 2)


def reference_phases(st: xr.Dataset, utc_offset: str) -> dict[str, dict[str, float]]:
    """{phase variable: {calendar month 'MM': local hour of the harmonic's maximum}} over the first twelve
    months of the record: the clock taken as right. A model keeps its training record's, so that new data of
    other years is judged against the clock the model learnt."""
    local = _local(st["time"].values, utc_offset)
    first = pd.Period(local[0], "M") if len(local) else None
    out: dict[str, dict[str, float]] = {}
    for var, harmonic in PHASE_VARS.items():
        if var not in st or first is None:
            continue
        cyc = monthly_cycles(st[var].transpose("station", "time").values, local).dropna()
        ref: dict[str, float] = {}
        for month, row in cyc.iterrows():
            if (pd.Period(month, "M") - first).n < 12 and month[5:] not in ref:
                ref[month[5:]] = round(phase_hours(row.to_numpy(), harmonic), 3)
        out[var] = ref
    return out


def month_lags(st: xr.Dataset, utc_offset: str,
               reference: dict[str, dict[str, float]] | None = None) -> pd.DataFrame:
    """Per month and phase variable: the lag (hours, + = later) against the same calendar month of `reference`
    (default: the first twelve months of this record, `reference_phases`). NaN where a month or its reference
    lacks data."""
    local = _local(st["time"].values, utc_offset)
    ref_all = reference if reference is not None else reference_phases(st, utc_offset)
    out: dict[str, pd.Series] = {}
    for var, harmonic in PHASE_VARS.items():
        if var not in st:
            continue
        cyc = monthly_cycles(st[var].transpose("station", "time").values, local).dropna()
        ref = ref_all.get(var, {})
        out[var] = pd.Series({m: _lag(phase_hours(r.to_numpy(), harmonic), ref[m[5:]], harmonic)
                              for m, r in cyc.iterrows() if m[5:] in ref}, dtype=float)
    return pd.DataFrame(out)


def reference_offset(phases: dict[str, dict[str, float]], reference: dict[str, dict[str, float]]) -> float | None:
    """Mean lag (hours, + = later) of one clock reference against another over the calendar months both hold;
    None when they share none. A store judged against its own first year that runs late shows it here."""
    lags = [_lag(phases[v][m], reference[v][m], h) for v, h in PHASE_VARS.items()
            for m in set(phases.get(v, {})) & set(reference.get(v, {}))]
    return float(np.mean(lags)) if lags else None


def decide(lags: pd.DataFrame) -> tuple[dict[str, int], list[str]]:
    """Whole-hour shift per month (non-zero ones only) and the months left undetermined (the lags disagree)."""
    shifts: dict[str, int] = {}
    undetermined: list[str] = []
    if lags.empty or set(lags.columns) != set(PHASE_VARS):
        return shifts, undetermined
    for month, row in lags.dropna().iterrows():
        k = int(np.clip(round(float(row.mean())), -MAX_SHIFT_H, MAX_SHIFT_H))
        if all(abs(float(v) - k) < TOLERANCE_H for v in row):
            if k:
                shifts[str(month)] = k
        else:
            undetermined.append(str(month))
    return shifts, undetermined


def realign(st: xr.Dataset, shifts: dict[str, int], utc_offset: str) -> xr.Dataset:
    """Copy of `st` whose weather columns in each shifted month take the values recorded `k` hours later."""
    if not shifts:
        return st
    months = np.asarray(_local(st["time"].values, utc_offset).strftime("%Y-%m"))
    k = np.array([shifts.get(m, 0) for m in months], dtype=np.int64)
    src = np.arange(len(months)) + k
    ok = (src >= 0) & (src < len(months))
    out = st.copy()
    for var in WEATHER_VARS:
        if var not in st:
            continue
        da = st[var].transpose("station", "time")
        vals = da.values
        new = np.full_like(vals, np.nan)
        new[:, ok] = vals[:, src[ok]]
        out[var] = (("station", "time"), new, da.attrs)
    return out


def correct_weather_clock(st: xr.Dataset, utc_offset: str, mode: str = "auto",
                          reference: dict[str, dict[str, float]] | None = None) -> tuple[xr.Dataset, dict[str, Any]]:
    """Detect and (mode 'auto') realign; mode 'off' only reports. Returns the dataset and a JSON-able report,
    whose `reference_phases` are the clock this record was judged against (`reference`, a model's training
    record's, or this record's first twelve months)."""
    if mode not in ("auto", "off"):
        raise DataError(f"weather_clock must be 'auto' or 'off', got {mode!r}")
    given = bool(reference and all(reference.get(v) for v in PHASE_VARS))
    phases = reference if given else reference_phases(st, utc_offset)
    lags = month_lags(st, utc_offset, phases)
    shifts, undetermined = decide(lags)
    report = {"mode": mode, "reference": "the model's training record (its first twelve months)" if given
              else "first twelve months of the record", "reference_from_model": given, "reference_phases": phases,
              "shifts_h": shifts, "undetermined": undetermined, "applied": mode == "auto" and bool(shifts),
              "lags_h": {m: {v: round(float(x), 2) for v, x in row.items() if np.isfinite(x)}
                         for m, row in lags.iterrows()}}
    return (realign(st, shifts, utc_offset) if mode == "auto" else st), report


def summary(report: dict[str, Any]) -> str:
    """One line for logs and the CLI: which months were (or would be) moved, by how much."""
    shifts = report.get("shifts_h", {})
    if not shifts:
        text = "weather clock: on time in every judged month"
    else:
        by_k: dict[int, list[str]] = {}
        for m, k in sorted(shifts.items()):
            by_k.setdefault(k, []).append(m)
        parts = [f"{len(ms)} months {k:+d} h ({ms[0]} .. {ms[-1]})" for k, ms in sorted(by_k.items())]
        verb = "realigned" if report.get("applied") else "NOT realigned (weather_clock=off)"
        against = "the model's training clock" if report.get("reference_from_model") else "the first year"
        text = f"weather clock: {', '.join(parts)} against {against}; {verb}"
    if report.get("undetermined"):
        text += f"; undetermined: {', '.join(report['undetermined'])}"
    return text
