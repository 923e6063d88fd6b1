"""Resolve what to serve: a local artifact dir, or an MLflow registry URI pinned to one version at start.

`models:/NAME@alias` -> version (pinned) -> tag `aqcast.onnx_uri` (set by `aqcast export`, else the run's
`onnx/` artifact dir) -> downloaded once into `$AQCAST_HOME/serving/NAME/vVERSION`.
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from features.errors import DataError, MissingInputError
from models.artifact import CARD_FILE, ONNX_FILE

ONNX_TAG = "aqcast.onnx_uri"
DEFAULT_MODEL_URI = "models:/aqcast@champion"
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))$")


@dataclass(frozen=True)
class Resolved:
    """A pinned, local model artifact."""

    artifact_dir: Path
    uri: str
    name: str | None = None
    version: str | None = None
    run_id: str | None = None
    alias: str | None = None

    @property
    def label(self) -> str:
        """`NAME/VERSION` (or the dir name for local artifacts)."""
        return f"{self.name}/{self.version}" if self.name else f"local:{self.artifact_dir.name}"


def aqcast_home() -> Path:
    """State directory ($AQCAST_HOME, default ./.aqcast)."""
    return Path(os.environ.get("AQCAST_HOME", ".aqcast")).resolve()


def tracking_uri_default() -> str:
    """$MLFLOW_TRACKING_URI, else the embedded SQLite store in $AQCAST_HOME."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{aqcast_home() / 'mlflow.db'}"


def mlflow_client(turi: str):
    """An MlflowClient for tracking *and* registry at `turi` (never a registry set earlier in the process)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=turi, registry_uri=turi)


def alias_of(uri: str) -> str | None:
    """'models:/NAME@alias' -> alias; a version URI or anything else (a directory) -> None."""
    m = _URI.match(uri.strip())
    return m["alias"] if m else None


def parse_models_uri(uri: str) -> tuple[str, str]:
    """`models:/NAME@alias` -> (NAME, alias); `models:/NAME/3` -> (NAME, '3')."""
    m = _URI.match(uri.strip())
    if not m:
        raise DataError(f"model URI {uri!r} not understood: use models:/NAME@alias or models:/NAME/VERSION")
    return m["name"], m["alias"] or m["version"]


def check_artifact(directory: Path) -> Path:
    """Raise MissingInputError unless `directory` holds model.onnx and model_card.json."""
    missing = [f for f in (ONNX_FILE, CARD_FILE) if not (Path(directory) / f).is_file()]
    if missing:
        raise MissingInputError(f"{directory}: missing {', '.join(missing)} (write it with `aqcast export`)")
    return Path(directory)


def resolve(uri: str | None = None, model_dir: str | Path | None = None, tracking_uri: str | None = None,
            cache: Path | None = None) -> Resolved:
    """Local dir (`model_dir`) wins; otherwise pin `uri` (default champion) and download its ONNX artifact."""
    if model_dir:
        d = check_artifact(Path(model_dir).resolve())
        from models.artifact import ModelCard

        card = ModelCard.read(d)
        return Resolved(d, uri=f"file://{d}", name=card.name if card.version else None, version=card.version,
                        run_id=card.run_id)
    uri = uri or DEFAULT_MODEL_URI
    name, ref = parse_models_uri(uri)
    from mlflow.exceptions import MlflowException

    turi = tracking_uri or tracking_uri_default()
    client = mlflow_client(turi)
    try:
        mv = client.get_model_version(name, ref) if ref.isdigit() else client.get_model_version_by_alias(name, ref)
    except MlflowException as ex:
        raise DataError(f"cannot resolve {uri} in {turi}: {ex.message.splitlines()[0]}; "
                        "train and register a model first, or pass --model models:/NAME/VERSION") from None
    src = (mv.tags or {}).get(ONNX_TAG) or (f"runs:/{mv.run_id}/onnx" if mv.run_id else None)
    if src is None:
        raise DataError(f"{name} version {mv.version} has no ONNX artifact: run `aqcast export --model {uri}`")
    dest = (cache or aqcast_home() / "serving") / name / f"v{mv.version}"
    if not (dest / ONNX_FILE).is_file() or not (dest / CARD_FILE).is_file():
        import mlflow.artifacts

        tmp = dest.with_name(dest.name + ".download")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            got = Path(mlflow.artifacts.download_artifacts(artifact_uri=src, dst_path=str(tmp),
                                                           tracking_uri=turi))
        except (MlflowException, OSError) as ex:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DataError(f"{name} version {mv.version}: cannot download {src} ({ex}); "
                            f"run `aqcast export --model models:/{name}/{mv.version} --out DIR`") from None
        check_artifact(got)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.move(str(got), str(dest))
        shutil.rmtree(tmp, ignore_errors=True)
    return Resolved(check_artifact(dest), uri=f"models:/{name}/{mv.version}", name=name, version=str(mv.version),
                    run_id=mv.run_id, alias=None if ref.isdigit() else ref)
