"""MLflow tracking and registry for aqcast.

Default store: embedded SQLite `$AQCAST_HOME/mlflow.db` + artifacts in `$AQCAST_HOME/mlartifacts` (offline);
`--tracking-uri` (or `$MLFLOW_TRACKING_URI`) for a server. The model artifact is a self-contained torch
checkpoint (`model/model.pt`: state_dict + ModelConfig + channels + norm_stats + grid JSON + history/leads +
windows + stations), not mlflow.pytorch's pt2. It is registered with `mlflow.register_model` on the run
artifact URI and the new version gets the config's alias (default `challenger`).
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from features.errors import DataError, MissingInputError

MODEL_DIR = "model"
MODEL_FILE = "model.pt"
FORMAT = "aqcast-torch-v1"


def aqcast_home() -> Path:
    """`$AQCAST_HOME` (default ./.aqcast), absolute."""
    return Path(os.environ.get("AQCAST_HOME", ".aqcast")).resolve()


def tracking_uri(uri: str | None = None) -> str:
    """`uri`, else `$MLFLOW_TRACKING_URI`, else the embedded SQLite store in $AQCAST_HOME."""
    if uri:
        return uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    home = aqcast_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlflow.db'}"


def _current_uri() -> str:
    """The URI set in this process with `mlflow.set_tracking_uri`, else the aqcast default."""
    from mlflow.tracking._tracking_service import utils

    return utils.get_tracking_uri() if utils.is_tracking_uri_set() else tracking_uri()


def setup(uri: str | None, experiment: str) -> str:
    """Point MLflow (tracking + registry) at `uri`/default; create the experiment (local artifact dir when the
    store is local). Returns the experiment id."""
    import mlflow

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    turi = tracking_uri(uri)
    mlflow.set_tracking_uri(turi)
    mlflow.set_registry_uri(turi)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is not None:
        return exp.experiment_id
    art = None
    if turi.startswith(("sqlite:///", "file:")) or "://" not in turi:
        art = (aqcast_home() / "mlartifacts" / experiment).as_uri()
    return mlflow.create_experiment(experiment, artifact_location=art)


def code_version() -> str:
    """Short git sha (`+dirty` when the tree has changes), else the package version."""
    try:
        root = Path(__file__).resolve().parents[1]
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5, check=False).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"aqcast {version('aqcast')}"
        except PackageNotFoundError:
            return "unknown"


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dict -> {a.b.c: str(value)} (MLflow params, values cut to 500 chars)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = (json.dumps(v) if isinstance(v, (list, tuple)) else str(v))[:500]
    return out


def save_checkpoint(path: str | Path, net: Any, meta: dict[str, Any]) -> Path:
    """Write the self-contained torch checkpoint {format, state_dict, meta} (plain types: weights_only-safe)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    torch.save({"format": FORMAT, "state_dict": state, "meta": json.loads(json.dumps(meta))}, path)
    return path


def log_and_register(net: Any, meta: dict[str, Any], run_id: str, name: str, alias: str) -> tuple[str, str]:
    """Log `model/model.pt` (+ meta.json) to the active run, register it, set `alias` on the new version.

    Returns (version, `models:/NAME/VERSION`)."""
    import mlflow
    from mlflow import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / MODEL_DIR
        save_checkpoint(d / MODEL_FILE, net, meta)
        (d / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
        # a minimal MLmodel file: register_model(runs:/...) then registers the run artifact directory itself
        (d / "MLmodel").write_text(
            f"artifact_path: {MODEL_DIR}\nrun_id: {run_id}\nflavors:\n  aqcast:\n    format: {FORMAT}\n"
            f"    file: {MODEL_FILE}\n    loader: training.tracking.load_model\n"
            f"utc_time_created: '{meta.get('created', '')}'\n")
        mlflow.log_artifacts(str(d), artifact_path=MODEL_DIR)
    mv = mlflow.register_model(f"runs:/{run_id}/{MODEL_DIR}", name,
                               tags={"aqcast.format": FORMAT, "aqcast.run_name": str(meta.get("run_name"))})
    client = MlflowClient()
    client.set_registered_model_alias(name, alias, mv.version)
    return str(mv.version), f"models:/{name}/{mv.version}"


def set_alias(name: str, version: str | int, alias: str, uri: str | None = None) -> None:
    """Point `alias` (e.g. champion) at `name` version `version`."""
    from mlflow.exceptions import MlflowException

    from serving.registry import mlflow_client

    turi = uri or _current_uri()
    try:
        mlflow_client(turi).set_registered_model_alias(name, alias, str(version))
    except MlflowException as ex:
        raise DataError(f"cannot set alias {alias!r} on {name} version {version}: "
                        f"{ex.message.splitlines()[0]}") from None


def _download(uri: str, turi: str, dst: str) -> tuple[Path, dict[str, Any]]:
    """Resolve models:/ or runs:/ and download the model dir into `dst`; returns (dir, registry info)."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from serving.registry import mlflow_client

    info: dict[str, Any] = {}
    client = mlflow_client(turi)
    try:
        if uri.startswith("models:/"):
            rest = uri[len("models:/"):].strip("/")
            if "@" in rest:
                name, alias = rest.split("@", 1)
                mv = client.get_model_version_by_alias(name, alias)
                info["alias"] = alias
            else:
                name, _, ver = rest.partition("/")
                if not ver.isdigit():
                    raise DataError(f"model URI {uri!r}: use models:/NAME/VERSION or models:/NAME@alias")
                mv = client.get_model_version(name, ver)
            info.update(name=name, version=str(mv.version), run_id=mv.run_id,
                        model_uri=f"models:/{name}/{mv.version}")
            src = f"runs:/{mv.run_id}/{MODEL_DIR}" if mv.run_id else mv.source
        else:
            src = uri
            if uri.startswith("runs:/"):
                info["run_id"] = uri[len("runs:/"):].split("/", 1)[0]
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=src, dst_path=dst, tracking_uri=turi))
    except MlflowException as ex:
        raise DataError(f"cannot load {uri} from {turi}: {ex.message.splitlines()[0]}") from None
    return local, info


def load_model(uri: str | Path, tracking_uri: str | None = None) -> tuple[Any, dict[str, Any]]:
    """(torch.nn.Module in eval mode, meta) from `models:/NAME/3`, `models:/NAME@alias`, `runs:/ID/model`,
    a local `model.pt` or a directory holding one."""
    import torch

    from models import build_model

    s = str(uri)
    with tempfile.TemporaryDirectory(prefix="aqcast-model-") as tmp:
        if s.startswith(("models:/", "runs:/")):
            local, info = _download(s, tracking_uri or _current_uri(), tmp)
        else:
            local, info = Path(s.removeprefix("file://")), {}
        path = local / MODEL_FILE if local.is_dir() else local
        if local.is_dir() and not path.is_file():
            path = local / MODEL_DIR / MODEL_FILE
        if not path.is_file():
            raise MissingInputError(f"no {MODEL_FILE} at {uri} (train a model with `aqcast train` first)")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as ex:  # noqa: BLE001 - unpickling errors have many types
            raise DataError(f"{path} is not a readable aqcast model checkpoint ({type(ex).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise DataError(f"{path} is not an aqcast model checkpoint (format {FORMAT})")
    meta = dict(ckpt["meta"])
    net = build_model(meta["model_config"], meta["channels"], meta["norm_stats"])
    net.load_state_dict(ckpt["state_dict"])
    net.eval()
    meta.update({k: v for k, v in info.items() if v is not None})
    meta.setdefault("uri", s)
    return net, meta
