"""Station time series container shared by the baselines, the GBT reference, evaluation and backtest."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SPECIES = ("pm25", "o3")


@dataclass
class StationSeries:
    """Hourly station data on a continuous UTC axis: `values[var]` is [T, S] float (NaN missing)."""

    times: np.ndarray  # [T] datetime64[ns] UTC
    stations: list[str]
    lon: np.ndarray  # [S]
    lat: np.ndarray  # [S]
    values: dict[str, np.ndarray] = field(default_factory=dict)
    utc_offset_h: float = 8.0

    def species(self) -> np.ndarray:
        """[T, 2, S] pm25, o3."""
        return np.stack([self.values[s] for s in SPECIES], axis=1)

    def index_of(self, t: np.datetime64) -> int:
        """Index of an exact hourly time (raises KeyError outside the axis)."""
        i = int((np.datetime64(t, "ns") - self.times[0]) // np.timedelta64(1, "h"))
        if not 0 <= i < self.times.size or self.times[i] != np.datetime64(t, "ns"):
            raise KeyError(f"{t} not on the hourly axis {self.times[0]} .. {self.times[-1]}")
        return i

    def subset(self, idx: np.ndarray | list[int]) -> StationSeries:
        """Only the stations at `idx`."""
        idx = np.asarray(idx, dtype=int)
        return StationSeries(self.times, [self.stations[i] for i in idx], self.lon[idx], self.lat[idx],
                             {k: v[:, idx] for k, v in self.values.items()}, self.utc_offset_h)
