"""Generate a synthetic world into a raw-data directory, and run emission-cut scenarios against it."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from features.errors import DataError, Problem
from features.synth import writer
from features.synth.emissions import DOMAIN_KT, SECTORS, SPECIES, sector_shares
from features.synth.observe import MET_STATIONS, POLLUTANTS, met_cells, satellite_obs, station_frames
from features.synth.scenario import ScaleSchedule, load_scenario, pick_state
from features.synth.weather import REGIMES
from features.synth.world import GENERATOR, SynthConfig, World, budget_residual_max, build_world, run

Progress = Callable[[int], None]


def world_stats(world: World, pm25_st: np.ndarray, o3_st: np.ndarray) -> dict:
    """Headline statistics of the station truth (all stations pooled), for world.json and the docs."""
    local = world.times + pd.Timedelta(hours=8)
    mon, hr = local.month.to_numpy(), local.hour.to_numpy()
    win, summ = np.isin(mon, (12, 1, 2)), np.isin(mon, (6, 7, 8))
    daily = pm25_st.reshape(-1, 24, pm25_st.shape[1]).mean(axis=1)
    aft = summ & (hr >= 13) & (hr <= 17)
    nd = daily.shape[0]
    out = {"annual_mean_pm25": float(pm25_st.mean()),
           "days_pm25_over_150_per_station_year": float((daily > 150).sum() / daily.shape[1] * 365.0 / nd),
           "max_daily_pm25": float(daily.max())}
    if win.any():
        out["winter_mean_pm25"] = float(pm25_st[win].mean())
        out["winter_mean_o3"] = float(o3_st[win].mean())
    if summ.any():
        out["summer_mean_pm25"] = float(pm25_st[summ].mean())
        out["summer_afternoon_o3"] = float(o3_st[aft].mean())
    return out


def generate(cfg: SynthConfig, out: Path, progress: Progress | None = None) -> dict:
    """Run the baseline world and write every raw-data file into `out`. Returns world.json content."""
    out.mkdir(parents=True, exist_ok=True)
    states = out / "states"
    states.mkdir(exist_ok=True)
    world = build_world(cfg)
    res = run(world, snapshot_dir=states if cfg.snapshot_every_h else None, progress=progress)
    land, wx, seed = world.land, world.wx, cfg.seed
    cells = met_cells(land.grid)
    met = {name: np.stack([wx.t2m[:, r, c], wx.d2m[:, r, c], wx.sp[:, r, c], wx.tp[:, r, c], wx.u10[:, r, c],
                           wx.v10[:, r, c]], axis=1).astype(np.float64) for name, (r, c) in cells.items()}
    frames = station_frames(res.station, world.stations, met, world.times, seed)
    writer.write_stations(out, frames, world.stations)
    writer.write_meteorology(out, wx, land, seed)
    cloud = wx.cloud[np.searchsorted(world.times, res.sat_times + np.timedelta64(30, "m"))] \
        if len(res.sat_times) else np.empty((0,) + land.grid.shape, np.float32)
    aod, no2col = satellite_obs(res.aod, res.no2col, cloud, seed)
    writer.write_satellite(out, res.sat_times, aod, no2col, land, seed)
    writer.write_emissions(out, world.inv, land, seed)
    writer.write_static(out, land, seed)
    writer.write_truth(out / "truth.nc", world.times.to_numpy(), {"pm25": res.pm25, "o3": res.o3, "no2": res.no2},
                       land, seed, wx)
    writer.write_sources(out, world.inv)
    pi, oi = POLLUTANTS.index("pm25"), POLLUTANTS.index("o3")
    meta = {
        "synthetic": True, "generator": GENERATOR, "config": cfg.model_dump(), "grid": json.loads(land.grid.to_json()),
        "time": {"first_utc": str(world.times[0]), "last_utc": str(world.times[-1]), "source_utc_offset": "+08:00"},
        "stations": world.stations.to_dict(orient="records"),
        "met_stations": [{"name": n, "lon": lo, "lat": la, "row": cells[n][0], "col": cells[n][1]}
                         for n, lo, la in MET_STATIONS],
        "sectors": list(SECTORS), "species": list(SPECIES), "domain_totals_kt_per_year": DOMAIN_KT,
        "sector_shares": {sp: dict(zip(SECTORS, np.round(sector_shares(sp), 4).tolist())) for sp in SPECIES},
        "regimes": list(REGIMES), "regime_days": {r: int((wx.regime[::24] == i).sum()) for i, r in enumerate(REGIMES)},
        "budget_kg": res.budget, "budget_relative_residual_max": budget_residual_max(res.budget),
        "station_truth_stats": world_stats(world, res.station[:, :, pi], res.station[:, :, oi]),
        "snapshots": "states/state_YYYYMMDDTHHZ.npz (UTC, start of that hour)",
        "files": ["PRSA_Data_*.csv", "stations.csv", "meteorology.nc", "satellite.nc", "emissions.nc", "static.nc",
                  "truth.nc", "sources.csv", "world.json"],
    }
    writer.write_json(out / "world.json", meta)
    return meta


def read_config(out: Path) -> SynthConfig:
    """The config of the world in `out` (from world.json)."""
    p = out / "world.json"
    if not p.is_file():
        raise DataError(Problem("world.json not found: generate the baseline first (aqcast synth --out DIR)",
                                file=str(p)))
    return SynthConfig.model_validate(json.loads(p.read_text())["config"])


def run_scenario(out: Path, scenario_path: Path, from_state: Path | None = None,
                 progress: Progress | None = None) -> dict:
    """Re-run the world in `out` with the scenario's emissions; writes truth_scenario_<name>.nc + json."""
    cfg = read_config(out)
    scen = load_scenario(scenario_path)
    world = build_world(cfg)
    sched = ScaleSchedule(world, scen, scenario_path.parent)
    first = min(sched.first_hour(), len(world.times) - 1)
    state = pick_state(from_state or out / "states", pd.Timestamp(world.times[first]))
    res = run(world, state=state, scale_fn=sched, progress=progress)
    times = world.times[res.k0:].to_numpy()
    path = out / f"truth_scenario_{scen.name}.nc"
    writer.write_truth(path, times, {"pm25": res.pm25, "o3": res.o3, "no2": res.no2}, world.land, cfg.seed, world.wx,
                       k0=res.k0, title=f"synthetic truth, scenario {scen.name}")
    summary = {"scenario": scen.model_dump(), "restart_utc": str(world.times[res.k0]), "budget_kg": res.budget,
               "budget_relative_residual_max": budget_residual_max(res.budget),
               "domain_mean_pm25": float(res.pm25.mean()), "domain_mean_o3": float(res.o3.mean())}
    writer.write_json(out / f"scenario_{scen.name}.json", summary)
    return summary
