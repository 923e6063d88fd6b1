"""`aqcast synth`: generate the synthetic world (or re-run it under an emission-cut scenario)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer


def synth(
    out: Annotated[Path, typer.Option(
        "--out", help="Output directory (raw-data layout: PRSA CSVs, stations.csv, *.nc).")],
    days: Annotated[int, typer.Option(help="Days to simulate (local days from --start).")] = 365,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives bit-identical output.")] = 0,
    nx: Annotated[int, typer.Option(help="Grid cells west-east.")] = 32,
    ny: Annotated[int, typer.Option(help="Grid cells south-north.")] = 32,
    res_km: Annotated[float, typer.Option(help="Cell size, km (LAEA projection centred on 116E 40N).")] = 3.0,
    start: Annotated[str, typer.Option(help="First day (local time, UTC+08:00), YYYY-MM-DD.")] = "2015-01-01",
    snapshot_every: Annotated[int, typer.Option(help="Hours between restart snapshots in OUT/states (0: none).")] = 24,
    scenario: Annotated[Path | None, typer.Option(
        help="Scenario YAML: re-run the existing world in OUT with emission cuts.")] = None,
    from_state: Annotated[Path | None, typer.Option(
        help="Snapshot .npz or directory to restart from (default OUT/states).")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Simulate the synthetic Beijing-like world (weather, emissions, transport, chemistry, observations)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from features.synth.generate import generate, read_config, run_scenario
    from features.synth.world import SynthConfig

    t0 = time.perf_counter()
    if scenario is not None:
        cfg = read_config(out)
    else:
        cfg = SynthConfig(days=days, seed=seed, nx=nx, ny=ny, res_km=res_km, start=start,
                          snapshot_every_h=snapshot_every)
    cols = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} h"),
            TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*cols, disable=quiet, transient=False) as bar:
        task = bar.add_task("synth" if scenario is None else f"scenario {scenario.stem}", total=cfg.days * 24)
        def step(n: int) -> None:
            bar.advance(task, n)

        if scenario is None:
            meta = generate(cfg, out, progress=step)
        else:
            meta = run_scenario(out, scenario, from_state, progress=step)
            bar.update(task, completed=cfg.days * 24)
    dt = time.perf_counter() - t0
    if scenario is None:
        s = meta["station_truth_stats"]
        typer.echo(f"synthetic world: {cfg.days} days, {cfg.ny}x{cfg.nx} cells of {cfg.res_km} km, seed {cfg.seed} "
                   f"-> {out} in {dt:.0f} s; station PM2.5 mean {s['annual_mean_pm25']:.0f} ug/m3, "
                   f"budget residual {meta['budget_relative_residual_max']:.1e}")
    else:
        typer.echo(f"scenario {meta['scenario']['name']}: restart {meta['restart_utc']} UTC, domain-mean PM2.5 "
                   f"{meta['domain_mean_pm25']:.1f} ug/m3 -> {out} in {dt:.0f} s")
