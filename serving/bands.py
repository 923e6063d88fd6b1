"""The served P10-P90 band, rolled at station cells the way `aqcast backtest` rolls it (models/rolling_bands.py).

At an init t the service also forecasts (once, then remembered) the same hour of each earlier day whose forecast
reaches into the trailing window (t - window, t], keeps those forecasts at the stations' cells with what the
stations then measured, and scales both gaps of t's band at the cells with a station by the factor that would
have covered 80 % of them; observations after t are never used, P50 never moves, cells without a station keep
the model's band. The contract's backtest (`--every 24h`) computes the same factors for the same init.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from models.rolling_bands import apply_factors, band_factors, band_z, earlier_inits, in_window

log = logging.getLogger("aqcast.serving")
EVERY_H = 24  # the earlier forecasts are those issued at the same hour of the day (the contract's cadence)


class RolledBands:
    """Remembered verifications of station forecasts (`keep`: every hour of 40 days; 72 x 2 x S floats each,
    7 kB on Beijing's 12 stations, 7 MB in all) and the factor they give each init. `issue(init)` -> (pred
    [L, 2, 3, S] at the stations' cells, obs [L, 2, S] there, NaN where missing) is how an earlier forecast is
    made."""

    def __init__(self, window_days: float, leads: int, species: list[str], keep: int = 24 * 40):
        self.window_days, self.leads, self.species, self.keep = window_days, leads, species, keep
        self._issued: OrderedDict[np.datetime64, np.ndarray] = OrderedDict()  # init -> band_z [L, species, S]
        self._lock = threading.RLock()

    def remember(self, init: np.datetime64, pred: np.ndarray, obs: np.ndarray) -> None:
        """Keep how the model's own band (before any rolling) at the stations met their observations."""
        z = band_z(np.moveaxis(pred, 2, -1), obs).astype(np.float32)
        with self._lock:
            self._issued[np.datetime64(init, "h")] = z
            self._issued.move_to_end(np.datetime64(init, "h"))
            while len(self._issued) > self.keep:
                self._issued.popitem(last=False)

    def forget(self, lo: np.datetime64, hi: np.datetime64) -> None:
        """Drop remembered forecasts of inits in [lo, hi] (their inputs or observations changed)."""
        lo, hi = np.datetime64(lo, "h"), np.datetime64(hi, "h")
        with self._lock:
            for t in [t for t in self._issued if lo <= t <= hi]:
                del self._issued[t]

    def factors(self, init: np.datetime64, earliest: np.datetime64,
                issue: Callable[[np.datetime64], tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, dict[str, Any]]:
        """(k [species], info) for `init`: earlier forecasts made with `issue` where not remembered yet."""
        t = np.datetime64(init, "h")
        past = list(earlier_inits(t, EVERY_H, self.window_days, self.leads, earliest))
        with self._lock:
            todo = [p for p in past if p not in self._issued]
        t0 = time.perf_counter()
        for p in todo:
            self.remember(p, *issue(p.astype("datetime64[ns]")))
        if todo:  # a fresh service's first day: every new hour of the day needs its earlier days once
            log.info("rolled band for %s: %d earlier forecasts made in %.1f s", t, len(todo), time.perf_counter() - t0)
        with self._lock:
            got = [(p, self._issued[p]) for p in past if p in self._issued]
        n_sp = len(self.species)
        if not got:
            return np.ones(n_sp), self._info(np.ones(n_sp), np.zeros(n_sp, int), 0)
        z = np.stack([zp for _, zp in got])  # [M, L, sp, S]
        hist_t = np.array([p for p, _ in got], "datetime64[h]")
        now = np.full((1,) + z.shape[1:], np.nan)  # t's own forecast: nothing verified yet
        k = band_factors(np.array([t]), now, hist_t, z, window_days=self.window_days)[0]
        n = np.isfinite(z[in_window(hist_t, self.leads, t, self.window_days)]).sum(axis=(0, 2))  # [sp]
        return k, self._info(k, n, len(got))

    def _info(self, k: np.ndarray, n: np.ndarray, issued: int) -> dict[str, Any]:
        return {"rolled_window_days": self.window_days, "earlier_forecasts": issued,
                "factor": {s: round(float(k[i]), 4) for i, s in enumerate(self.species)},
                "verified_samples": {s: int(n[i]) for i, s in enumerate(self.species)},
                "applied_at": "cells with a station; elsewhere the model's band"}


def roll_cube(cube: np.ndarray, k: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """cube [L, sp, 3, Y, X] with both gaps scaled by k [sp] at the cells (rows, cols) only."""
    where = np.zeros(cube.shape[-2:], bool)
    where[rows, cols] = True
    return apply_factors(cube[None], k[None], where=where)[0]


def model_band_info() -> dict[str, Any]:
    """What responses say when the band is not rolled (`--rolling-bands 0`)."""
    return {"rolled_window_days": 0, "applied_at": "nowhere: the model's own band everywhere"}
