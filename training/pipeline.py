"""`aqcast demo`: the main job end to end — world → features → train → register → export → serve → forecast.

Each step runs the same `aqcast` sub-command a user would type (so the demo exercises the real CLI), chaining
the registered model URI that `aqcast train` prints as its last line.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import typer

DEMO_POINTS = [  # a few named places inside the synthetic world / Beijing grid
    ("Dongcheng", 116.42, 39.93),
    ("Haidian", 116.30, 39.96),
    ("Changping", 116.23, 40.20),
]


def _home() -> Path:
    return Path(os.environ.get("AQCAST_HOME", ".aqcast")).resolve()


def _aqcast(*args: str, capture: bool = False) -> str:
    """Run an aqcast sub-command in this interpreter's environment; stream output; return stdout."""
    cmd = [sys.executable, "-c", "from training.cli import main; main()", *args]
    typer.secho("$ aqcast " + " ".join(args), fg=typer.colors.CYAN)
    if not capture:
        rc = subprocess.call(cmd)
        out = ""
    else:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            lines.append(line)
        rc = proc.wait()
        out = "".join(lines)
    if rc != 0:
        typer.secho(f"step failed (exit {rc}): aqcast {' '.join(args)}", fg=typer.colors.RED, err=True)
        raise typer.Exit(rc)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} before it was ready")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server at {url} was not ready after {timeout:.0f} s")


def _print_table(resp: dict) -> None:
    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 120)  # logs: no wrapped category cells at 80
    tz = "+08:00"  # Beijing time: the demo world and the shared data are both in UTC+8

    def local(iso: str) -> str:
        return pd.Timestamp(iso).tz_convert(tz).strftime("%m-%d %H:%M")

    console.print(f"[bold]model[/bold] {resp.get('model_version')}   [bold]init[/bold] "
                  f"{local(resp['init_time'])} (UTC{tz})   [bold]µg/m³[/bold], every 6 h of 72")
    for item in resp.get("forecasts", []):
        table = Table(title=f"{item.get('label') or item.get('cell_id')}  (cell {item.get('cell_id')})")
        for col in (f"valid UTC{tz[:3]}", "lead", "PM2.5 P50 [P10–P90]", "IAQI", "category", "O3 P50 [P10–P90]"):
            table.add_column(col)
        pm, o3 = item["species"]["pm25"], item["species"]["o3"]
        for k, lead in enumerate(item["lead_hours"]):
            if lead % 6 and lead != 1:
                continue
            table.add_row(local(item["valid_time"][k]), f"+{lead} h",
                          f"{pm['p50'][k]:.0f} [{pm['p10'][k]:.0f}–{pm['p90'][k]:.0f}]",
                          f"{pm['aqi'][k]:.0f}", pm["category"][k],
                          f"{o3['p50'][k]:.0f} [{o3['p10'][k]:.0f}–{o3['p90'][k]:.0f}]")
        console.print(table)


def demo(
    data: Path = typer.Option(None, help="Raw data directory (UCI layout). Default: generate the synthetic world."),
    days: int = typer.Option(90, help="Days of synthetic world to generate (the last 30 validate)."),
    seed: int = typer.Option(0, help="Seed of the synthetic world."),
    config: Path = typer.Option(Path("configs/synth.yaml"), help="Training config."),
    out: Path = typer.Option(None, help="Where the demo writes its outputs (default $AQCAST_HOME/demo)."),
    keep_serving: bool = typer.Option(False, "--keep-serving", help="Leave the server running at the end."),
    tracking_uri: str = typer.Option(None, help="MLflow tracking URI (default: embedded SQLite store)."),
) -> None:
    """Run the main job: synthetic world (or --data) → features → train → register → export → serve → forecast."""
    import httpx

    t0 = time.monotonic()
    out = (out or _home() / "demo").resolve()
    out.mkdir(parents=True, exist_ok=True)
    track = ["--tracking-uri", tracking_uri] if tracking_uri else []
    if data is None:
        data = out / f"world-seed{seed}-{days}d"
        if not (data / "world.json").exists():
            _aqcast("synth", "--out", str(data), "--days", str(days), "--seed", str(seed))
    store = out / "store.zarr"
    _aqcast("features", "build", "--data", str(data), "--out", str(store))
    _aqcast("features", "info", str(store))
    uri = _aqcast("train", "--config", str(config), "--store", str(store), *track,
                  capture=True).strip().splitlines()[-1].strip()
    artifact = out / "artifact"
    _aqcast("export", "--model", uri, "--out", str(artifact), *track)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, AQCAST_HOME=str(_home()))
    serve_cmd = [sys.executable, "-c", "from training.cli import main; main()", "serve", "--model", uri,
                 "--store", str(store), "--port", str(port), *track]
    typer.secho("$ aqcast " + " ".join(serve_cmd[3:]), fg=typer.colors.CYAN)
    server = subprocess.Popen(serve_cmd, env=env, start_new_session=True)
    try:
        _wait_ready(url, server, timeout=120)
        body = {"points": [{"lon": lon, "lat": lat} for _, lon, lat in DEMO_POINTS],
                "species": ["pm25", "o3"], "lead_hours": 72}
        resp = httpx.post(url + "/forecast", json=body, timeout=60)
        resp.raise_for_status()
        result = resp.json()
        for item, (name, _, _) in zip(result.get("forecasts", []), DEMO_POINTS):
            item["label"] = name
        (out / "forecast.json").write_text(json.dumps(result, indent=1))
        _print_table(result)
        if result.get("weather_persisted_hours"):
            typer.secho(f"note: the store has no weather forecast past {result['init_time']}; the last day's "
                        f"weather was persisted over {result['weather_persisted_hours']} h of the horizon",
                        fg=typer.colors.YELLOW)
        band = result.get("band") or {}
        if band.get("rolled_window_days"):
            k = ", ".join(f"{sp} x{v:.2f}" for sp, v in band["factor"].items())
            typer.echo(f"P10/P90 at cells with a station: rescaled by what covered 80 % of the forecasts verified "
                       f"there in the last {band['rolled_window_days']:g} days ({k}; {band['earlier_forecasts']} "
                       "earlier forecasts); elsewhere the model's band")
        _forecast_map(url, out / "forecast_map.png")
        typer.secho(f"forecast map: {out / 'forecast_map.png'}", fg=typer.colors.GREEN)
    finally:
        if keep_serving and server.poll() is None:
            typer.secho(f"server left running at {url} (pid {server.pid})", fg=typer.colors.GREEN)
        else:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
    typer.secho(f"demo finished in {time.monotonic() - t0:.0f} s; model {uri}", fg=typer.colors.GREEN)


def _forecast_map(url: str, path: Path) -> None:
    """Fetch the whole-grid P50 at +24 h as NetCDF and draw it."""
    import io

    import httpx
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import xarray as xr

    grid = httpx.get(url + "/grid", timeout=30).json()
    body = {"bbox": grid["bbox"], "species": ["pm25", "o3"], "lead_hours": [24], "format": "netcdf"}
    resp = httpx.post(url + "/forecast", json=body, timeout=60)
    resp.raise_for_status()
    ds = xr.open_dataset(io.BytesIO(resp.content), engine="h5netcdf")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, sp, label in zip(axes, ("pm25", "o3"), ("PM2.5", "O3")):
        da = ds[sp].sel(quantile=0.5).isel(lead_time=0)
        im = ax.pcolormesh(ds["lon"], ds["lat"], da, shading="auto", cmap="magma_r")
        fig.colorbar(im, ax=ax, label="µg/m³")
        ax.set_title(f"{label} P50, +24 h ({ds.attrs.get('model_version', '')})")
        ax.set_xlabel("lon")
        ax.set_ylabel("lat")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
