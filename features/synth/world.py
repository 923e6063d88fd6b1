"""World configuration and the run loop (baseline or scenario) of the synthetic transport-chemistry model."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from features.errors import DataError
from features.synth import chemistry as ch
from features.synth.emissions import SECTORS, SPECIES, Inventory, make_inventory
from features.synth.engine import TOP_M, Budget, State, burden, initial_state, step
from features.synth.geo import Landscape, make_grid, make_landscape
from features.synth.observe import OVERPASS_LOCAL_H, POLLUTANTS, column_fields, station_table, surface_species
from features.synth.weather import Weather, make_weather

UTC_OFFSET_H = 8
GENERATOR = "aqcast features.synth 1.0"


class SynthConfig(BaseModel):
    """Everything that defines a synthetic world (the same config and seed give bit-identical output)."""

    model_config = ConfigDict(frozen=True)
    days: int = Field(60, ge=1, le=3660)
    seed: int = 0
    nx: int = Field(32, ge=4, le=256)
    ny: int = Field(32, ge=4, le=256)
    res_km: float = Field(3.0, gt=0.2, le=50)
    start: str = Field("2015-01-01", description="first local (UTC+08:00) day")
    snapshot_every_h: int = Field(24, ge=0, description="restart snapshot interval (0: none)")

    def times_utc(self) -> pd.DatetimeIndex:
        """Hourly UTC times, starting at local midnight of `start`."""
        try:
            t0 = pd.Timestamp(self.start)
        except ValueError as e:
            raise DataError(f"--start {self.start!r} is not a date (expected YYYY-MM-DD)") from e
        if t0.tzinfo is not None:
            t0 = t0.tz_convert("UTC+08:00").tz_localize(None)
        t0 = t0.normalize() - pd.Timedelta(hours=UTC_OFFSET_H)
        return pd.date_range(t0, periods=self.days * 24, freq="h")


@dataclass
class World:
    """Static ingredients: landscape, inventory, weather, stations."""

    cfg: SynthConfig
    land: Landscape
    inv: Inventory
    wx: Weather
    times: pd.DatetimeIndex
    stations: pd.DataFrame


def build_world(cfg: SynthConfig) -> World:
    """Landscape, emissions and the whole weather record (deterministic in cfg)."""
    grid = make_grid(cfg.nx, cfg.ny, cfg.res_km)
    land = make_landscape(grid, cfg.seed)
    times = cfg.times_utc()
    return World(cfg=cfg, land=land, inv=make_inventory(land), wx=make_weather(land, times, cfg.seed),
                 times=times, stations=station_table(grid))


@dataclass
class RunResult:
    """What one run produced (hours k0..k1-1 of the world)."""

    k0: int
    pm25: np.ndarray  # (time, y, x) float32
    o3: np.ndarray
    no2: np.ndarray
    station: np.ndarray  # (time, station, pollutant) float32 (true cell values)
    sat_times: np.ndarray  # overpass times UTC
    aod: np.ndarray  # (day, y, x)
    no2col: np.ndarray
    budget: dict
    final: State


ScaleFn = Callable[[int], np.ndarray]


def ones_scale(world: World) -> np.ndarray:
    """Emission scale factors of the baseline (all exactly 1)."""
    return np.ones((len(SECTORS), len(SPECIES)) + world.land.grid.shape)


def run(world: World, state: State | None = None, scale_fn: ScaleFn | None = None,
        snapshot_dir: Path | None = None, progress: Callable[[int], None] | None = None) -> RunResult:
    """Integrate from `state` (default: background air at hour 0) to the end of the world's period."""
    wx, g = world.wx, world.land.grid
    state = state or initial_state(wx, g.shape)
    base = ones_scale(world)
    scale_fn = scale_fn or (lambda k: base)
    k0, n = state.k, len(world.times)
    nt = n - k0
    local = world.times + pd.Timedelta(hours=UTC_OFFSET_H)
    lh, wd, mo = local.hour.to_numpy(), local.dayofweek.to_numpy(), local.month.to_numpy() - 1
    rows, cols = world.stations["row"].to_numpy(), world.stations["col"].to_numpy()
    out = {k: np.empty((nt,) + g.shape, np.float32) for k in ("pm25", "o3", "no2")}
    station = np.empty((nt, len(rows), len(POLLUTANTS)), np.float32)
    sat_t, aods, no2s, pending = [], [], [], None
    cell_m2 = float(g.res_m) ** 2
    budget = Budget(initial=burden(state.m, cell_m2))
    for k in range(k0, n):
        if snapshot_dir is not None and world.cfg.snapshot_every_h and k % world.cfg.snapshot_every_h == 0:
            state.save(snapshot_dir / f"state_{pd.Timestamp(world.times[k]):%Y%m%dT%H}Z.npz", world.times[k])
        o = step(state, wx, world.inv, scale_fn(k), (int(lh[k]), int(wd[k]), int(mo[k])), float(g.res_m), budget)
        t_c = wx.t2m[k].astype(np.float64)
        surf = surface_species(o.c_ml, t_c, o.rh, o.j)
        i = k - k0
        out["pm25"][i], out["o3"][i], out["no2"][i] = surf["pm25"], surf["o3"], surf["no2"]
        station[i] = np.stack([surf[p][rows, cols] for p in POLLUTANTS], axis=-1)
        if lh[k] in (OVERPASS_LOCAL_H, OVERPASS_LOCAL_H + 1):
            a, c = column_fields(o.c_ml, o.c_rl, o.h, TOP_M, t_c, o.rh, o.j)
            if lh[k] == OVERPASS_LOCAL_H:
                pending = (a, c)
            elif pending is not None:
                aods.append(0.5 * (a + pending[0]))
                no2s.append(0.5 * (c + pending[1]))
                sat_t.append(world.times[k] - pd.Timedelta(minutes=30))
                pending = None
        if progress is not None:
            progress(1)
    final = burden(state.m, cell_m2)
    empty = np.empty((0,) + g.shape, np.float32)
    return RunResult(k0=k0, pm25=out["pm25"], o3=out["o3"], no2=out["no2"], station=station,
                     sat_times=np.array(sat_t, dtype="datetime64[ns]"),
                     aod=np.array(aods, np.float32) if aods else empty,
                     no2col=np.array(no2s, np.float32) if no2s else empty,
                     budget=budget.to_dict(final), final=state)


def budget_residual_max(budget: dict) -> float:
    """Largest |residual| relative to the larger of emitted mass and burden, over tracers."""
    rel = []
    for tr in ch.TRACERS:
        b = budget[tr]
        scale = max(abs(b["emitted_kg"]), abs(b["initial_kg"]), abs(b["final_kg"]), 1e-30)
        rel.append(abs(b["residual_kg"]) / scale)
    return max(rel)
