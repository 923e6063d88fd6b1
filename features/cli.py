"""`aqcast features build|info`: build and inspect the gridded feature store (heavy imports inside)."""
from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from features.errors import DataError

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  help="Build and inspect the gridded feature store.")


def _user_errors(fn: Callable) -> Callable:
    """Print DataError problems one per line and exit 2 (also when the app is run on its own)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DataError as err:
            for problem in err.problems:
                typer.secho(f"error: {problem}", fg=typer.colors.RED, err=True)
            raise SystemExit(2) from None  # not typer.Exit: the root runs click with standalone_mode=False
    return wrapper


@app.command()
@_user_errors
def build(
    data: Annotated[Path, typer.Option("--data", help="raw data directory (station CSVs + stations.csv)")],
    out: Annotated[Path, typer.Option("--out", help="zarr store to write (replaced if it exists)")],
    res_km: Annotated[float, typer.Option("--res-km", help="cell size in km (e.g. 3 or 0.5)")] = 3.0,
    train_to: Annotated[str | None, typer.Option(
        "--train-to", help="end of the training period (ISO 8601, e.g. 2015-02-28T23:00+08:00); "
        "default: all but the final 365 days")] = None,
    grid: Annotated[Path | None, typer.Option("--grid", help="grid JSON (e.g. from a previous store)")] = None,
    margin_km: Annotated[float, typer.Option("--margin-km", help="margin around the station extent")] = 15.0,
    elevation: Annotated[Path | None, typer.Option("--elevation", help="elevation .npy (0.05° grid)")] = None,
    emission_totals: Annotated[Path | None, typer.Option("--emission-totals",
                                                         help="MEIC sector totals csv")] = None,
    weather_clock: Annotated[str, typer.Option(
        "--weather-clock", help="auto: realign station weather months that run whole hours off the first "
        "year's clock; off: keep them as recorded (both report them)")] = "auto",
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Build the feature store from a data directory."""
    import sys
    import time

    from features.clock import summary
    from features.grid import Grid
    from features.store import build_store

    g = None
    if grid is not None:
        if not grid.is_file():
            raise DataError(f"{grid}: grid JSON not found")
        try:
            g = Grid.from_json(grid.read_text())
        except Exception as e:  # noqa: BLE001 - json/pydantic errors
            raise DataError(f"{grid}: not a valid grid JSON ({e})") from None
    t0 = time.perf_counter()
    ds = build_store(data, out, res_km=res_km, grid=g, train_period=train_to, elevation=elevation,
                     emission_totals=emission_totals, progress=progress, margin_km=margin_km,
                     weather_clock=weather_clock,
                     command="aqcast " + " ".join(sys.argv[1:]) if sys.argv else None)
    elapsed = time.perf_counter() - t0
    meta = {k: json.loads(ds.attrs[k]) for k in ("grid", "train_period", "missing", "roles")}
    gd = meta["grid"]
    typer.echo(f"wrote {out} in {elapsed:.1f} s")
    typer.echo(f"  grid      {gd['ny']} x {gd['nx']} cells of {gd['res_m']} m (LAEA lon_0={gd['lon_0']:g} "
               f"lat_0={gd['lat_0']:g})")
    typer.echo(f"  time      {_t(ds['time'].values[0])} .. {_t(ds['time'].values[-1])} UTC "
               f"({ds.sizes['time']} h), {ds.sizes['station']} stations")
    typer.echo(f"  train     {meta['train_period'][0]} .. {meta['train_period'][1]}")
    roles: dict[str, list[str]] = {}
    for v, r in meta["roles"].items():
        roles.setdefault(r, []).append(v)
    for r, vs in roles.items():
        typer.echo(f"  {r:<9} {len(vs)}: {', '.join(vs)}")
    typer.echo(f"  missing   {', '.join(meta['missing']) or '-'}")
    typer.echo(f"  {summary(json.loads(ds.attrs['weather_clock']))}")


def _t(t: Any) -> str:
    import numpy as np

    return str(np.datetime_as_string(np.datetime64(t, "m")))


@app.command()
@_user_errors
def info(store: Annotated[Path, typer.Argument(help="feature store (zarr directory)")]) -> None:
    """Variables (role, units, coverage), time range, grid, QC flags per station, provenance."""
    from rich.console import Console
    from rich.table import Table

    from features.store import coverage, open_store, store_meta

    ds = open_store(store)
    meta = store_meta(ds)
    con = Console(width=120)
    g = meta["grid"]
    con.print(f"[bold]{store}[/bold]  (store version {ds.attrs.get('store_version', '?')})")
    con.print(f"grid: {g['ny']} x {g['nx']} cells of {g['res_m']} m, LAEA lon_0={g['lon_0']:g} "
              f"lat_0={g['lat_0']:g}, x0={g['x0']:g} y0={g['y0']:g}")
    con.print(f"time: {_t(ds['time'].values[0])} .. {_t(ds['time'].values[-1])} UTC ({ds.sizes['time']} h); "
              f"source UTC offset {ds.attrs.get('source_utc_offset', '?')}")
    con.print(f"stations ({ds.sizes['station']}): {', '.join(map(str, ds['station'].values))}")
    tp = meta.get("train_period", ["?", "?"])
    con.print(f"training period (normalisation fitted here): {tp[0]} .. {tp[1]}")
    cov = meta.get("coverage") or coverage(ds)
    t = Table(title="variables (coverage: % non-missing; obs_* over station cells)")
    for c in ("variable", "role", "units", "dims", "coverage %", "source / derived"):
        t.add_column(c)
    order = {r: k for k, r in enumerate(("target", "observed", "forcing", "static", "truth", "qc", "mask"))}
    for v in sorted(ds.data_vars, key=lambda n: (order.get(ds[n].attrs.get("role"), 9), str(n))):
        a = ds[v].attrs
        t.add_row(str(v), str(a.get("role", "?")), str(a.get("units", "")), ",".join(ds[v].dims),
                  f"{cov[str(v)]:.1f}" if str(v) in cov else "", str(a.get("derived", ""))[:48])
    con.print(t)
    reasons = json.loads(ds.attrs.get("missing_reasons", "{}"))
    missing = meta.get("missing", [])
    con.print("missing channels: " + (", ".join(f"{m} ({reasons.get(m, 'absent')})" for m in missing) or "-"))
    if "weather_clock" in meta:
        from features.clock import summary

        con.print(summary(meta["weather_clock"]))
    qs = meta.get("qc_summary", {})
    flags = ["STUCK", "SPIKE", "NEGATIVE", "IMPOSSIBLE", "LONG_GAP"]
    q = Table(title="data-quality flags raised per station (values, all variables)")
    for c in ["station", *flags]:
        q.add_column(c, justify="right" if c != "station" else "left")
    for s, counts in qs.items():
        q.add_row(s, *(str(counts.get(f, 0)) for f in flags))
    con.print(q)
    prov = meta.get("provenance", {})
    con.print(f"provenance: created {prov.get('created')}, code {prov.get('code_version')}")
    con.print(f"  command: {prov.get('command')}")
    for src in prov.get("sources", []):
        con.print(f"  {src.get('sha256', '')[:12]}  {src.get('path')}")
