"""`aqcast serve`: pin the model version, then run `bentoml serve serving.service:AQCastService` and wait until
it is ready. Also `build_bento` (a Bento with the model inside, offline) and helpers to start/stop servers.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import typer

ROOT = Path(__file__).resolve().parents[1]
TELEMETRY_OFF = {"MLFLOW_DISABLE_TELEMETRY": "true", "BENTOML_DO_NOT_TRACK": "true", "ORT_DISABLE_TELEMETRY": "1",
                 "DO_NOT_TRACK": "1"}


def server_env(model_uri: str | None = None, model_dir: Path | None = None, store: Path | None = None,
               tracking_uri: str | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a service process (BENTOML_HOME under $AQCAST_HOME, telemetry off)."""
    from serving.registry import aqcast_home

    env = dict(os.environ) | TELEMETRY_OFF
    env["AQCAST_HOME"] = str(aqcast_home())
    env.setdefault("BENTOML_HOME", str(aqcast_home() / "bentoml"))
    for key, val in (("AQCAST_MODEL_URI", model_uri), ("AQCAST_MODEL_DIR", model_dir), ("AQCAST_STORE", store),
                     ("AQCAST_TRACKING_URI", tracking_uri)):
        if val:
            env[key] = str(val)
        else:
            env.pop(key, None)
    return env | (extra or {})


def start_server(env: dict[str, str], port: int, host: str = "127.0.0.1", log: Path | None = None,
                 new_session: bool = False) -> subprocess.Popen:
    """Start `bentoml serve` (not waiting). `new_session` puts it in its own process group (tests, benches)."""
    cmd = [sys.executable, "-m", "bentoml", "serve", "serving.service:AQCastService", "--host", host,
           "--port", str(port), "--working-dir", str(ROOT)]
    out = open(log, "ab") if log else None  # noqa: SIM115 - handed to the child
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT if out else None,
                            start_new_session=new_session)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> float:
    """Poll `url/readyz` until 200; raise RuntimeError on exit or timeout (then `/model` says why)."""
    import httpx

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"bentoml serve exited with code {proc.returncode} before it was ready")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return time.monotonic() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    reason = ""
    try:
        reason = httpx.get(url + "/model", timeout=2).json().get("error") or ""
    except (httpx.HTTPError, ValueError):
        pass
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s" + (f": {reason}" if reason else ""))


def stop_server(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM the server (its process group if it has its own), SIGKILL after `timeout`."""
    if proc.poll() is not None:
        return
    own_group = os.getpgid(proc.pid) == proc.pid
    (os.killpg if own_group else os.kill)(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        (os.killpg if own_group else os.kill)(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def _pin(model: str, model_dir: Path | None, tracking_uri: str | None) -> tuple[str | None, Path]:
    """Resolve alias -> version once here (fail fast, download); the server gets the pinned URI."""
    from serving.registry import resolve

    r = resolve(uri=model, model_dir=model_dir, tracking_uri=tracking_uri)
    return (None if model_dir else r.uri), r.artifact_dir


def serve(
    model: str = typer.Option("models:/aqcast@champion", "--model", help="Registry URI (alias pinned at start)."),
    port: int = typer.Option(3000, help="TCP port."),
    store: Path = typer.Option(None, help="Feature store (zarr) on the model's grid (default: the card's)."),
    host: str = typer.Option("127.0.0.1", help="Bind address."),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help="MLflow tracking URI."),
    model_dir: Path = typer.Option(None, "--model-dir", help="Local artifact dir instead of the registry."),
    timeout: float = typer.Option(120.0, help="Seconds to wait for readiness."),
    rolling_bands: float = typer.Option(30.0, "--rolling-bands", min=0, help="at cells with a station, rescale "
                                        "each init's P10/P90 band from the same hour's forecasts verified there in "
                                        "this many trailing days, as `aqcast backtest` does (0: the model's band)"),
) -> None:
    """Serve forecasts over HTTP (BentoML on onnxruntime) until interrupted."""
    from models.artifact import ModelCard

    pinned, art = _pin(model, model_dir, tracking_uri)
    store = store or (Path(ModelCard.read(art).store) if ModelCard.read(art).store else None)
    if store is None or not Path(store).exists():
        from features.errors import MissingInputError

        raise MissingInputError(f"feature store {store} not found: pass --store PATH (built on the model's grid)")
    env = server_env(pinned, model_dir, Path(store).resolve(), tracking_uri,
                     extra={"AQCAST_ROLLING_BANDS": f"{rolling_bands:g}"}
                     | ({} if model_dir else {"AQCAST_REQUESTED_URI": model}))
    proc = start_server(env, port, host)
    url = f"http://{host}:{port}"

    def _stop(signum: int, _frame: object) -> None:  # forward; the main thread's proc.wait() then returns
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, _stop)
    try:
        took = wait_ready(url, proc, timeout)
        typer.secho(f"serving {pinned or art} at {url} (ready in {took:.1f} s; OpenAPI {url}/docs.json)",
                    fg=typer.colors.GREEN)
        while proc.poll() is None:
            try:
                proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                continue
    except RuntimeError as ex:
        stop_server(proc)
        typer.secho(f"error: {ex}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        stop_server(proc)


def build_bento(model: str = "models:/aqcast@champion", model_dir: Path | None = None,
                tracking_uri: str | None = None, version: str | None = None) -> str:
    """`bentoml build` offline with the ONNX artifact inside (served via AQCAST_MODEL_DIR); returns the tag."""
    import yaml

    from serving.registry import aqcast_home

    pinned, art = _pin(model, model_dir, tracking_uri)
    spec = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    with tempfile.TemporaryDirectory(prefix="aqcast-bento-") as tmp:
        ctx = Path(tmp)
        for pkg in ("features", "serving"):
            shutil.copytree(ROOT / pkg, ctx / pkg, ignore=shutil.ignore_patterns("__pycache__", "synth"))
        (ctx / "models").mkdir()
        for f in ("__init__.py", "artifact.py"):
            shutil.copy2(ROOT / "models" / f, ctx / "models" / f)
        shutil.copytree(art, ctx / "bento_model")
        if pinned:
            spec.setdefault("labels", {})["model_uri"] = pinned
        (ctx / "bentofile.yaml").write_text(yaml.safe_dump(spec))
        cmd = [sys.executable, "-m", "bentoml", "build", str(ctx), "-f", str(ctx / "bentofile.yaml"),
               "--output", "tag"] + (["--version", version] if version else [])
        env = server_env() | {"BENTOML_HOME": os.environ.get("BENTOML_HOME", str(aqcast_home() / "bentoml"))}
        res = subprocess.run(cmd, env=env, cwd=ctx, capture_output=True, text=True, timeout=600, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"bentoml build failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return res.stdout.strip().splitlines()[-1].replace("__tag__:", "")


def bento(
    model: str = typer.Option("models:/aqcast@champion", help="Registered model URI (alias or version)."),
    model_dir: Path = typer.Option(None, help="A local artifact dir from `aqcast export` (bypasses MLflow)."),
    tracking_uri: str = typer.Option(None, help="MLflow tracking URI (default: embedded SQLite store)."),
    version: str = typer.Option(None, help="Bento version label (default: generated)."),
) -> None:
    """Build a Bento (offline) with the ONNX model inside; containerize it with `bentoml containerize TAG`."""
    try:
        tag = build_bento(model, model_dir, tracking_uri, version)
    except RuntimeError as err:
        typer.secho(str(err), fg=typer.colors.RED, err=True)
        raise SystemExit(1) from err
    typer.echo(tag)
