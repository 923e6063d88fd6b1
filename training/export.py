"""`aqcast export`: trained model (normalisation inside) -> `DIR/model.onnx` + `DIR/model_card.json`.

The ONNX graph takes the five contract inputs (`models.artifact.INPUT_NAMES`, float32) and returns
`forecast [B, L, 2, 3, Y, X]`; batch is dynamic, and Y/X too when torch.export allows it (then serving can
tile large grids). Weights live inside the one file (dynamo exporter, `external_data=False`).

Parity: onnxruntime vs PyTorch on random valid inputs and on real windows from the feature store (if given);
the export fails (`ParityError`, nothing registered) when |ort - torch| > atol + rtol * |torch| anywhere.

Registry: the ONNX dir is logged to the model's MLflow run under `onnx/`, and the registered version gets
tags `aqcast.onnx_uri = runs:/<run_id>/onnx` (+ sha256, parity): one version = one trained model, with the
serving artifact attached to it (no second version to keep in sync). Serving resolves alias -> version ->
tag -> downloads that dir (`serving/registry.py`).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import typer

from features.errors import DataError
from models.artifact import CARD_FILE, INPUT_NAMES, ONNX_FILE, OUTPUT_NAME, ModelCard, Parity

ONNX_TAG = "aqcast.onnx_uri"
UNITS = {"pm25": "ug m-3", "pm10": "ug m-3", "so2": "ug m-3", "no2": "ug m-3", "co": "ug m-3", "o3": "ug m-3",
         "t2m": "degC", "d2m": "degC", "sp": "hPa", "tp": "mm h-1", "u10": "m s-1", "v10": "m s-1",
         "ws": "m s-1", "blh": "m", "ssr": "W m-2", "rh": "%", "aod": "1", "no2col": "umol m-2",
         "elevation": "m", "emis_nox": "kg km-2 h-1", "emis_so2": "kg km-2 h-1", "emis_voc": "kg km-2 h-1",
         "emis_nh3": "kg km-2 h-1", "emis_pm25": "kg km-2 h-1"}


class ParityError(DataError):
    """onnxruntime and PyTorch disagree beyond the tolerance."""


def code_version() -> str:
    """`git describe`-like id of the working tree (`+dirty` when modified), else the package version."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5, check=False).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import version

        return f"aqcast {version('aqcast')}"


def unit_of(name: str) -> str:
    """Unit of a channel from its store name (`obs_pm25` -> ug m-3; calendar encodings -> 1)."""
    if name in UNITS:
        return UNITS[name]
    base = name.split("_", 1)[1] if "_" in name else name
    return UNITS.get(base, UNITS.get(name.removeprefix("static_"), "1"))


def random_inputs(channels: Mapping[str, Sequence[str]], history: int, leads: int, ny: int, nx: int,
                  batch: int = 2, seed: int = 0, norm_stats: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Valid random inputs drawn around the norm stats (pollutants log-normal, sparse with masks)."""
    from models.normalize import channel_stats

    rng = np.random.default_rng(seed)
    stats = norm_stats or {}

    def draw(names: Sequence[str], shape: tuple[int, ...]) -> np.ndarray:  # shape [..., C, Y, X]
        z = rng.standard_normal(shape)
        out = np.empty(shape, np.float32)
        for c, n in enumerate(names):
            mean, std, is_log = channel_stats(n, stats)
            v = mean + std * z[..., c, :, :]
            out[..., c, :, :] = np.expm1(v).clip(0) if is_log else v
        return out

    co, cf, cs = (list(channels.get(k, [])) for k in ("obs", "forcing", "static"))
    obs_mask = (rng.random((batch, history, len(co), ny, nx)) < 0.15).astype(np.float32)
    obs = draw(co, (batch, history, len(co), ny, nx)) * obs_mask
    t = history + leads
    forcing_mask = (rng.random((batch, t, len(cf), ny, nx)) < 0.95).astype(np.float32)
    forcing = draw(cf, (batch, t, len(cf), ny, nx)) * forcing_mask
    static = draw(cs, (batch, len(cs), ny, nx))
    return dict(zip(INPUT_NAMES, (obs, obs_mask, forcing, forcing_mask, static)))


def to_onnx(model: Any, example: Mapping[str, np.ndarray], path: Path, opset: int = 18) -> bool:
    """Export with the dynamo exporter (weights inside). Returns True if Y/X are dynamic too."""
    import torch

    args = tuple(torch.from_numpy(example[n]) for n in INPUT_NAMES)
    b = torch.export.Dim("batch", min=1, max=4096)
    y, x = torch.export.Dim("y", min=2, max=8192), torch.export.Dim("x", min=2, max=8192)
    spatial = {n: {0: b, 3: y, 4: x} for n in INPUT_NAMES[:4]} | {"static": {0: b, 2: y, 3: x}}
    batch_only = {n: {0: b} for n in INPUT_NAMES}
    errors = []
    for dyn, is_spatial in ((spatial, True), (batch_only, False)):
        try:
            torch.onnx.export(model, args, str(path), input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
                              dynamo=True, external_data=False, opset_version=opset, dynamic_shapes=dyn,
                              verbose=False)
            return is_spatial
        except Exception as ex:  # noqa: BLE001 - try the next, more constrained, export
            errors.append(f"{'batch+spatial' if is_spatial else 'batch'}: {ex}")
    raise RuntimeError("ONNX export failed:\n" + "\n".join(errors))


def parity(model: Any, onnx_path: Path, samples: Sequence[Mapping[str, np.ndarray]], atol: float = 1e-2,
           rtol: float = 1e-4, n_real: int = 0) -> Parity:
    """Compare onnxruntime with PyTorch on `samples` (the last `n_real` are real); raise ParityError past tol."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst_abs, worst_rel, per_kind = 0.0, 0.0, {"random": 0.0, "real": 0.0}
    bad: list[str] = []
    for k, s in enumerate(samples):
        kind = "real" if k >= len(samples) - n_real else "random"
        with torch.no_grad():
            ref = model(*(torch.from_numpy(np.ascontiguousarray(s[n])) for n in INPUT_NAMES)).numpy()
        got = sess.run([OUTPUT_NAME], {n: np.ascontiguousarray(s[n], dtype=np.float32) for n in INPUT_NAMES})[0]
        if got.shape != ref.shape:
            bad.append(f"sample {k}: ONNX output shape {got.shape} != PyTorch {ref.shape}")
            continue
        diff = np.abs(got.astype(np.float64) - ref)
        finite = np.isfinite(ref) & np.isfinite(got)
        if not finite.all() or not np.array_equal(np.isfinite(ref), np.isfinite(got)):
            bad.append(f"sample {k} ({kind}): non-finite values differ")
        mad = float(diff[finite].max()) if finite.any() else 0.0
        per_kind[kind] = max(per_kind[kind], mad)
        worst_abs = max(worst_abs, mad)
        worst_rel = max(worst_rel, float((diff[finite] / (np.abs(ref[finite]) + 1e-6)).max(initial=0.0)))
        over = diff[finite] > atol + rtol * np.abs(ref[finite])
        if over.any():
            bad.append(f"sample {k} ({kind}): max |onnx - torch| = {mad:.3g} ug m-3 exceeds atol {atol} + "
                       f"rtol {rtol} x |torch| at {int(over.sum())} values")
    if bad:
        raise ParityError(bad + ["fix the exporter/model or raise --atol/--rtol if the difference is benign"])
    return Parity(max_abs_diff_random=per_kind["random"], max_abs_diff_real=per_kind["real"] if n_real else None,
                  max_rel_diff=worst_rel, atol=atol, rtol=rtol, n_random=len(samples) - n_real, n_real=n_real)


def real_samples(store: Path, channels: Mapping[str, Sequence[str]], history: int, leads: int,
                 n: int = 2) -> list[dict[str, np.ndarray]]:
    """Up to `n` windows (batch 1) from the store's last possible init times, via WindowSampler."""
    from features.windows import WindowSampler, valid_init_times
    from serving.forecaster import open_store_any

    ds = open_store_any(store)
    inits = valid_init_times(ds, history=history, leads=leads)
    if len(inits) == 0:
        return []
    picks = inits[np.linspace(0, len(inits) - 1, min(n, len(inits))).astype(int)]
    sampler = WindowSampler(ds, list(picks), history=history, leads=leads, obs_vars=list(channels["obs"]),
                            forcing_vars=list(channels["forcing"]), static_vars=list(channels.get("static", [])))
    out = []
    for i in range(len(sampler)):
        s = sampler[i]
        out.append({n_: np.asarray(s[n_], dtype=np.float32)[None] for n_ in INPUT_NAMES})
    return out


def build_card(model: Any, meta: Mapping[str, Any], parity_report: Parity | None, dynamic_spatial: bool,
               opset: int) -> ModelCard:
    """ModelCard from the model's config and the metadata `training.tracking.load_model` returned."""
    cfg = getattr(model, "cfg", None)
    channels = dict(meta.get("channels") or {"obs": list(model.obs_names), "forcing": list(model.forcing_names),
                                               "static": list(model.static_names)})
    history = int(meta.get("history") or getattr(cfg, "history", 24))
    leads = int(meta.get("leads") or getattr(cfg, "leads", 72))
    grid = meta.get("grid")
    if grid is None:
        raise DataError("the model metadata has no grid definition: retrain with a store that carries attrs 'grid'")
    norm = meta.get("norm_stats") or {}
    rf = cfg.receptive_field_cells() if cfg is not None and hasattr(cfg, "receptive_field_cells") else None
    names = [n for group in channels.values() for n in group]
    metrics = meta.get("validation_metrics") or meta.get("metrics") or {}
    return ModelCard(
        name=str(meta.get("name") or "aqcast"), version=_str(meta.get("version")), run_id=_str(meta.get("run_id")),
        model_uri=_str(meta.get("model_uri") or meta.get("uri")), opset=opset, dynamic_spatial=dynamic_spatial,
        receptive_field_cells=rf, ensemble_members=int(getattr(cfg, "members", 1)),
        architecture=cfg.model_dump(mode="json") if hasattr(cfg, "model_dump") else None,
        channels={k: list(v) for k, v in channels.items()},
        dropped_channels={str(k): str(v) for k, v in dict(meta.get("dropped_channels") or {}).items()},
        roles=dict(meta.get("roles") or {}),
        units={n: unit_of(n) for n in names} | {s: "ug m-3" for s in ("pm25", "o3")},
        grid=grid if isinstance(grid, str) else json.dumps(grid), history=history, leads=leads,
        lead_hours=list(range(1, leads + 1)),
        species=list(getattr(cfg, "species", ("pm25", "o3"))), quantiles=list(getattr(cfg, "quantiles",
                                                                                     (0.1, 0.5, 0.9))),
        train_window=_window(meta.get("train_window") or meta.get("train_period")),
        validation_window=_window(meta.get("validation_window") or meta.get("val_period")),
        validation_metrics={k: v for k, v in dict(metrics).items() if isinstance(v, (int, float, str, dict, list))},
        norm_stats=json.loads(norm) if isinstance(norm, str) else dict(norm), parity=parity_report,
        normalisation=model.normalisation(),
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), code_version=code_version(),
        store=_str(meta.get("store")), quantile_calibration=meta.get("quantile_calibration"),
        weight_averaging=meta.get("weight_averaging"), persistence_blend=meta.get("persistence_blend"))


def _str(v: Any) -> str | None:
    return None if v is None else str(v)


def _window(v: Any) -> list[str] | None:
    if v is None:
        return None
    if isinstance(v, str):
        v = json.loads(v) if v.startswith("[") else [v]
    return [str(x) for x in v]


def export_artifact(model: Any, meta: Mapping[str, Any], out: Path, store: Path | None = None,
                    atol: float = 1e-2, rtol: float = 1e-4, opset: int = 18, n_random: int = 2) -> ModelCard:
    """Export, check parity, write the card. On failure the partial `out` dir is removed and the error raised."""
    model = model.eval()
    tmp = Path(out).with_name(Path(out).name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if store is not None:  # fill what the run metadata lacks from the store's attrs
            from serving.forecaster import open_store_any

            attrs = open_store_any(store).attrs
            meta = {"grid": attrs.get("grid"), "roles": json.loads(attrs.get("roles", "{}")),
                    "norm_stats": attrs.get("norm_stats"), "train_window": attrs.get("train_period"),
                    "store": str(store)} | {k: v for k, v in meta.items() if v is not None}
        card0 = build_card(model, meta, None, False, opset)
        grid = json.loads(card0.grid)
        ny, nx = int(grid.get("ny", 8)), int(grid.get("nx", 8))
        ex = random_inputs(card0.channels, card0.history, card0.leads, min(ny, 16), min(nx, 16), batch=2)
        dynamic_spatial = to_onnx(model, ex, tmp / ONNX_FILE, opset)
        shapes = [(1, ny, nx), (3, max(ny // 2, 4), max(nx // 2 + 3, 4)) if dynamic_spatial else (3, ny, nx)]
        samples = [random_inputs(card0.channels, card0.history, card0.leads, yy, xx, b, 7 + i, card0.norm_stats)
                   for i, (b, yy, xx) in enumerate(shapes[:max(n_random, 1)])]
        real = real_samples(Path(store), card0.channels, card0.history, card0.leads) if store else []
        report = parity(model, tmp / ONNX_FILE, samples + real, atol=atol, rtol=rtol, n_real=len(real))
        card = card0.model_copy(update={"parity": report, "dynamic_spatial": dynamic_spatial})
        card.write(tmp)
        out = Path(out)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        return card
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def attach_to_registry(out: Path, card: ModelCard, uri: str, tracking_uri: str | None) -> ModelCard:
    """Log `out/` to the run under `onnx/`, tag the registered version with its location; returns the card."""
    from serving.registry import mlflow_client, parse_models_uri, tracking_uri_default

    client = mlflow_client(tracking_uri or tracking_uri_default())
    name, ref = parse_models_uri(uri) if uri.startswith("models:/") else (None, None)
    mv = None
    if name is not None:
        mv = (client.get_model_version_by_alias(name, ref) if not str(ref).isdigit()
              else client.get_model_version(name, str(ref)))
        card = card.model_copy(update={"name": name, "version": str(mv.version), "run_id": mv.run_id or card.run_id,
                                       "model_uri": f"models:/{name}/{mv.version}"})
        card.write(out)
    if not card.run_id:
        typer.secho("no MLflow run for this model: artifact written, not logged", err=True)
        return card
    client.log_artifacts(card.run_id, str(out), artifact_path="onnx")
    client.log_metric(card.run_id, "onnx_parity_max_abs", card.parity.max_abs_diff_random if card.parity else 0.0)
    if mv is not None:
        tags = {ONNX_TAG: f"runs:/{card.run_id}/onnx", "aqcast.onnx_sha256": sha256(out / ONNX_FILE),
                "aqcast.parity_max_abs": f"{card.parity.max_abs_diff_random if card.parity else float('nan'):.3g}"}
        for k, v in tags.items():
            client.set_model_version_tag(name, str(mv.version), k, v)
    return card


def export_command(
    model: str = typer.Option(..., "--model", help="Model URI: models:/NAME@alias, models:/NAME/VERSION, runs:/..."),
    out: Path = typer.Option(..., "--out", help="Artifact directory to write (model.onnx + model_card.json)."),
    store: Path = typer.Option(None, "--store", help="Feature store for parity on real samples (default: the "
                               "store the model was trained on, when it is still there)."),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help="MLflow tracking URI."),
    atol: float = typer.Option(1e-2, help="Parity: absolute tolerance (ug m-3)."),
    rtol: float = typer.Option(1e-4, help="Parity: relative tolerance."),
    opset: int = typer.Option(18, min=17, help="ONNX opset (>= 17)."),
    register: bool = typer.Option(True, help="Log to the MLflow run and tag the registered version."),
) -> None:
    """Export a trained model to ONNX + model card, check parity, attach it to the registry version."""
    from training.tracking import load_model

    if tracking_uri:
        import mlflow

        mlflow.set_tracking_uri(tracking_uri)
    net, meta = load_model(model)
    meta = dict(meta or {})
    meta.setdefault("model_uri", model)
    if store is None and meta.get("store") and Path(meta["store"]).exists():
        store = Path(meta["store"])
    card = export_artifact(net, meta, out, store=store, atol=atol, rtol=rtol, opset=opset)
    if register:
        card = attach_to_registry(out, card, model, tracking_uri)
    p = card.parity
    typer.echo(f"exported {out / ONNX_FILE} ({(out / ONNX_FILE).stat().st_size / 1e6:.1f} MB) + {CARD_FILE}; "
               f"parity max|diff| random {p.max_abs_diff_random:.2e}"
               + (f", real {p.max_abs_diff_real:.2e}" if p.max_abs_diff_real is not None else "")
               + f" ug m-3; version {card.version or '-'}")
