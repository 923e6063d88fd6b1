"""`aqcast train` end to end: store -> Lightning fit (checkpoints, early stopping, resume) -> MLflow run ->
final validation, plots -> model artifact registered with the config's alias.

Run state lives in `$AQCAST_HOME/runs/<run_name>/` (`last.ckpt`, `best.ckpt`, `state.json` with the MLflow run
id): `--resume` continues the newest unfinished run of the same config (or `--run-name`) from `last.ckpt`,
in the same MLflow run.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np

from features.errors import DataError, Problem
from training.averaging import TailAverage, choose_weights
from training.config import TrainConfig, aqcast_home

log = logging.getLogger(__name__)


class TrainingInterrupted(Exception):
    """Training stopped by the user (Ctrl-C): the run is resumable."""


# ---- feature store ------------------------------------------------------------------------------------------
def _sha_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def store_key(data_dir: Path, cfg: TrainConfig) -> str:
    """sha256 over the input files' contents, the build options, the training period and the store format."""
    from features.store import STORE_VERSION

    h = hashlib.sha256(f"store {STORE_VERSION}\n".encode())
    for p in sorted(q for q in data_dir.iterdir() if q.is_file() and not q.name.startswith(".")):
        h.update(f"{p.name}:{_sha_file(p)}\n".encode())
    h.update(json.dumps([cfg.data.build.model_dump(mode="json"), cfg.data.train_period]).encode())
    return h.hexdigest()[:16]


def resolve_store(cfg: TrainConfig, store: str | None, data: str | None, echo: Callable[[str], None]) -> Path:
    """--store, else --data (build or reuse `$AQCAST_HOME/stores/<sha>.zarr`), else the config's store/data_dir."""
    store = store or (None if data else cfg.data.store)
    data = data or (None if store else cfg.data.data_dir)
    if store:
        p = Path(store)
        if not p.exists():
            raise DataError(Problem("feature store not found (build it with `aqcast features build`)",
                                    file=str(p)))
        return p.resolve()
    if not data:
        raise DataError("no data: pass --store STORE or --data DIR (or set data.store / data.data_dir)")
    d = Path(data)
    if not d.is_dir():
        raise DataError(Problem("data directory not found", file=str(d)))
    out = aqcast_home() / "stores" / f"{store_key(d, cfg)}.zarr"
    if out.exists():
        echo(f"reusing feature store {out}")
        return out
    from features.store import build_store

    b = cfg.data.build
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    echo(f"building feature store {out} from {d}")
    build_store(d, tmp, res_km=b.res_km, margin_km=b.margin_km, elevation=b.elevation,
                emission_totals=b.emission_totals, train_period=cfg.data.train_period, weather_clock=b.weather_clock,
                command=f"aqcast train --data {d}")
    os.replace(tmp, out)
    return out


# ---- run directory ------------------------------------------------------------------------------------------
def _state(run_dir: Path) -> dict[str, Any]:
    p = run_dir / "state.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def _write_state(run_dir: Path, **kw: Any) -> None:
    st = _state(run_dir) | kw
    (run_dir / "state.json").write_text(json.dumps(st, indent=1))


def find_resumable(cfg: TrainConfig, run_name: str | None) -> Path:
    """The run dir to resume: `run_name`, else the newest unfinished run of this config with a last.ckpt."""
    runs = aqcast_home() / "runs"
    if run_name:
        d = runs / run_name
        if not (d / "last.ckpt").is_file():
            raise DataError(Problem("no last.ckpt to resume from", file=str(d)))
        return d
    cands = [d for d in runs.glob("*") if (d / "last.ckpt").is_file() and _state(d).get("config") == cfg.name
             and _state(d).get("status") != "finished"]
    if not cands:
        raise DataError(f"--resume: no unfinished run of config {cfg.name!r} with a last.ckpt under {runs}")
    return max(cands, key=lambda d: (d / "last.ckpt").stat().st_mtime)


# ---- callbacks ----------------------------------------------------------------------------------------------
class MlflowMetrics(L.Callback):
    """Log train loss every `every` steps and validation metrics after each validation (step = global step);
    with `echo`, also one progress line per validation (for logs, where there is no progress bar)."""

    def __init__(self, every: int = 10, echo: Callable[[str], None] | None = None):
        self.every, self.echo = every, echo

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, idx: int) -> None:
        import mlflow

        if trainer.global_step % self.every == 0 and "train_loss" in trainer.callback_metrics:
            mlflow.log_metric("train_loss", float(trainer.callback_metrics["train_loss"]), step=trainer.global_step)

    def on_validation_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        import mlflow

        if trainer.sanity_checking:
            return
        m = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
        m["epoch"] = float(trainer.current_epoch)
        m["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"]) if trainer.optimizers else 0.0
        if getattr(pl_module, "sched_total", None):
            m["lr_schedule_steps"] = float(pl_module.sched_total)
        mlflow.log_metrics(m, step=trainer.global_step)
        if self.echo is not None:
            self.echo(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} step {trainer.global_step}: "
                      f"val_loss {m.get('val_loss', float('nan')):.4f}, MAE +24 h pm25 "
                      f"{m.get('val_mae_pm25_h24', float('nan')):.1f} o3 {m.get('val_mae_o3_h24', float('nan')):.1f}")


class _NoAdverts(logging.Filter):
    """Drops Lightning's "Tip: ... try installing ..." lines, which bury aqcast's own warnings in the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("\N{ELECTRIC LIGHT BULB} Tip:")


def quiet_lightning_adverts() -> None:
    """Install `_NoAdverts` once on the logger Lightning's rank-zero messages go through."""
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoAdverts) for f in log.filters):
        log.addFilter(_NoAdverts())


def _trainer(cfg: TrainConfig, run_dir: Path, extra: list[Any]) -> L.Trainer:
    import warnings

    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")  # state.json lives there too
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    quiet_lightning_adverts()
    o = cfg.optim
    last = ModelCheckpoint(dirpath=run_dir, filename="step", save_top_k=0, save_last=True,
                           every_n_train_steps=o.checkpoint_every_n_steps)
    best = ModelCheckpoint(dirpath=run_dir, filename="best", monitor="val_loss", mode="min", save_top_k=1,
                           enable_version_counter=False)
    stop = EarlyStopping(monitor="val_loss", mode="min", patience=o.patience)
    avg: list[L.Callback] = [TailAverage()] if o.average_weights == "tail" else []
    if o.ema_decay:  # validation, checkpoints and the registered model use the averaged weights
        from lightning.pytorch.callbacks import EMAWeightAveraging

        avg = [EMAWeightAveraging(decay=o.ema_decay, update_starting_at_step=o.warmup_steps)]
    return L.Trainer(default_root_dir=run_dir, max_epochs=o.max_epochs, logger=False, accelerator="cpu",
                     callbacks=[last, best, stop, *avg, *extra], gradient_clip_val=o.gradient_clip,
                     deterministic=o.deterministic, num_sanity_val_steps=0, enable_model_summary=False,
                     val_check_interval=o.val_check_interval, log_every_n_steps=10,
                     max_time=dt.timedelta(minutes=o.max_minutes) if o.max_minutes else None)


# ---- main ---------------------------------------------------------------------------------------------------
def run_training(cfg: TrainConfig, store: str | None = None, data: str | None = None,
                 tracking_uri: str | None = None, resume: bool = False, run_name: str | None = None,
                 echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Train, log, register. Returns {uri, version, run_id, run_name, run_dir, metrics, per_lead, seconds}."""
    import mlflow
    import torch

    from training import tracking
    from training.blend_fit import fit_after_training
    from training.datamodule import AQDataModule
    from training.heap import retain_freed_memory
    from training.module import AQModule

    t0 = time.monotonic()
    torch.set_num_threads(cfg.optim.num_threads)
    retain_freed_memory()  # ~19 % faster steps where page faults are dear (VMs); M23
    store_path = resolve_store(cfg, store, data, echo)
    if resume:
        run_dir = find_resumable(cfg, run_name or cfg.tracking.run_name)
        run_name = run_dir.name
    else:
        run_name = run_name or cfg.tracking.run_name or f"{cfg.name}-{dt.datetime.now():%Y%m%d-%H%M%S}"
        run_dir = aqcast_home() / "runs" / run_name
        if (run_dir / "last.ckpt").exists():
            raise DataError(f"run {run_name!r} already has checkpoints in {run_dir}: use --resume or another name")
        run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = run_dir / "last.ckpt" if resume else None
    L.seed_everything(cfg.optim.seed, workers=True, verbose=False)
    dm = AQDataModule(cfg, store_path)
    dm.setup("fit")
    norm_stats = json.loads(dm.ds.attrs["norm_stats"])
    try:
        module = AQModule(cfg, dm.channels, norm_stats)
    except ValueError as err:  # the model refuses these inputs, e.g. model.log_forcings without log1p statistics
        raise DataError(Problem(str(err), file=str(store_path), key="model")) from err
    exp_id = tracking.setup(tracking_uri or cfg.tracking.tracking_uri, cfg.tracking.experiment)
    prev = _state(run_dir).get("run_id") if resume else None
    resumed_step = int(torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]) if ckpt else None
    with mlflow.start_run(run_id=prev, experiment_id=None if prev else exp_id,
                          run_name=None if prev else run_name) as run:
        run_id = run.info.run_id
        _write_state(run_dir, run_id=run_id, config=cfg.name, status="running", store=str(store_path),
                     run_name=run_name)
        if resume:
            mlflow.set_tag("resumed_from_step", str(resumed_step))
            echo(f"resuming run {run_name} (MLflow {run_id}) from global step {resumed_step}")
        else:
            _log_setup(cfg, dm, store_path, run_dir, module.precision)
        bar = sys.stdout.isatty()  # Lightning draws its progress bar on a terminal; logs get a line per epoch
        trainer = _trainer(cfg, run_dir, [MlflowMetrics(echo=None if bar else echo)])
        trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt) if ckpt else None)
        if trainer.interrupted:
            mlflow.set_tag("interrupted", "true")
            raise TrainingInterrupted(f"interrupted at step {trainer.global_step}; continue with "
                                      f"`aqcast train --config ... --resume --run-name {run_name}`")
        mlflow.set_tags({k: v for k in ("budget_warning", "schedule_note") if (v := getattr(module, k))})
        averaging = choose_weights(cfg.optim.average_weights, module, trainer, run_dir)
        mlflow.set_tag("weights", f"{averaging['method']}: mean of steps {averaging['steps']}")
        blend = fit_after_training(cfg, module, dm, echo)  # before the band's calibration, which then fits it
        calib = _calibrate(cfg, module, dm)
        _final_validation(module, dm)
        metrics = module.stats.scalars()
        per_lead = module.stats.per_lead()
        _log_final(cfg, dm, module, metrics, per_lead, run_dir, trainer, time.monotonic() - t0)
        meta = _meta(cfg, dm, store_path, run_id, run_name, metrics)
        meta["quantile_calibration"], meta["weight_averaging"], meta["persistence_blend"] = calib, averaging, blend
        version, uri = tracking.log_and_register(module.net, meta, run_id, cfg.tracking.registered_model,
                                                 cfg.tracking.alias)
        mlflow.set_tag("registered_model", uri)
    _write_state(run_dir, status="finished", model_uri=uri)
    return {"uri": uri, "version": version, "run_id": run_id, "run_name": run_name, "run_dir": str(run_dir),
            "metrics": metrics, "per_lead": per_lead, "seconds": time.monotonic() - t0,
            "global_step": trainer.global_step, "epochs": trainer.current_epoch, "weights": averaging,
            "warnings": [module.budget_warning] if module.budget_warning else [], "schedule": module.schedule_note}


def _calibrate(cfg: TrainConfig, module: Any, dm: Any) -> dict[str, Any] | None:
    """Fit the P10/P90 gap scales on the validation inits every `data.calib_every_h` hours
    (`optim.calibrate_quantiles`); log what it did."""
    if not cfg.optim.calibrate_quantiles:
        return None
    import mlflow

    from training.calibrate import calibrate

    module.eval()
    out = calibrate(module.net, dm.calib_dataloader(), module.quantiles, hour=cfg.optim.calibrate_hour,
                    season=tuple(("pm25", "o3").index(s) for s in cfg.optim.calibrate_season))
    mlflow.log_metrics(out["metrics"])
    mlflow.log_dict(out["report"], "calibration.json")
    keys = ("method", "n_inits", "init_hours_utc", "gap_scale", "gap_hour", "gap_season")
    return {k: out["report"][k] for k in keys} | {"metrics": out["metrics"]}


def _final_validation(module: Any, dm: Any) -> list[dict[str, float]]:
    """Validate the chosen weights once more, keeping station forecasts for plots."""
    module.collect = True
    tr = L.Trainer(logger=False, accelerator="cpu", enable_progress_bar=False, enable_checkpointing=False,
                   enable_model_summary=False)
    out = tr.validate(module, datamodule=dm, verbose=False)
    module.collect = False
    return out


def _log_setup(cfg: TrainConfig, dm: Any, store_path: Path, run_dir: Path, precision: str) -> None:
    """Params (flattened config), data windows, code version, store provenance, resolved training precision."""
    import mlflow

    from training import tracking

    mlflow.log_params(tracking.flatten(cfg.model_dump(mode="json")))
    w = dm.windows()
    mlflow.log_params({"window.train": " .. ".join(w["train"]), "window.val": " .. ".join(w["val"]),
                       "n_train_inits": len(dm.train_ds), "n_val_inits": len(dm.val_ds),
                       "channels.obs": ",".join(dm.channels["obs"]),
                       "channels.forcing": ",".join(dm.channels["forcing"])[:500],
                       "channels.static": ",".join(dm.channels["static"]),
                       "channels.dropped": json.dumps(dm.dropped)[:500],
                       "stations.input": ",".join(dm.input_stations),
                       "stations.held_out": ",".join(cfg.data.held_out_stations)})
    mlflow.set_tags({"code_version": tracking.code_version(), "store": str(store_path), "config": cfg.name,
                     "run_dir": str(run_dir), "precision": precision})
    attrs = {k: dm.ds.attrs.get(k) for k in ("grid", "train_period", "provenance", "missing", "missing_reasons",
                                             "qc_summary", "coverage", "store_version",
                                             "weather_clock")}
    mlflow.log_dict({k: _maybe_json(v) for k, v in attrs.items() if v is not None}, "store_attrs.json")
    mlflow.log_dict(cfg.model_dump(mode="json"), "config.json")


def _maybe_json(v: Any) -> Any:
    try:
        return json.loads(v) if isinstance(v, str) else v
    except json.JSONDecodeError:
        return v


def _log_final(cfg: TrainConfig, dm: Any, module: Any, metrics: dict[str, float], per_lead: dict[str, np.ndarray],
               run_dir: Path, trainer: L.Trainer, seconds: float) -> None:
    """Final metrics (scalars + per lead, step = lead hour) and plots."""
    import mlflow

    mlflow.log_metrics({f"final_{k}": v for k, v in metrics.items()} | {
        "train_seconds": seconds, "global_step": trainer.global_step,
        "skipped_updates": getattr(trainer.lightning_module, "skipped_updates", 0)})
    for lead in range(per_lead["mae"].shape[0]):
        row = {f"{name}_{sp}_by_lead": float(arr[lead, k]) for name, arr in per_lead.items()
               for k, sp in enumerate(("pm25", "o3")) if np.isfinite(arr[lead, k])}
        mlflow.log_metrics(row, step=lead + 1)
    if not cfg.tracking.log_plots:
        return
    from training import plots

    pdir = run_dir / "plots"
    pdir.mkdir(exist_ok=True)
    c = module.collected
    paths = [plots.skill_by_lead(per_lead, pdir / "skill_by_lead.png")]
    ds = dm.ds
    if c.get("grid") and "lon" in ds.coords:
        t0 = np.datetime64(int(c["init_time"][0][0]), "ns")
        paths.append(plots.forecast_map(c["grid"][0], ds["lon"].values, ds["lat"].values,
                                        ds["station_lon"].values, ds["station_lat"].values,
                                        f"init {str(t0)[:16]} UTC", pdir / "forecast_map.png"))
    if c.get("q"):
        q, tg, mk = (np.concatenate(c[k]) for k in ("q", "target", "mask"))
        stations = dm.stations
        held = [s for s in cfg.data.held_out_stations if s in stations]
        name = held[0] if held else stations[0]
        s = stations.index(name)
        paths.append(plots.station_series(np.concatenate(c["init_time"]), q[..., s], tg[..., s], mk[..., s],
                                          name + (" (held out)" if held else ""), pdir / "station_series.png"))
    for p in paths:
        mlflow.log_artifact(str(p), artifact_path="plots")


def _store_options(b: Any, ds: Any) -> dict[str, Any]:
    """How evaluate/backtest rebuild inputs on new data as for training: side files (emission totals, elevation),
    the points spreading the emission totals (training stations), the weather-clock rule and reference."""
    from features.store_build import SIDE_FILES

    clock = _maybe_json(ds.attrs.get("weather_clock")) or {}  # its rule and the clock it learnt (M50, M54)
    opts: dict[str, Any] = {"margin_km": b.margin_km, "weather_clock": clock.get("mode", "off"),
                            "weather_clock_reference": clock.get("reference_phases")}
    srcs = (_maybe_json(ds.attrs.get("provenance")) or {}).get("sources", [])
    used = [str(x["path"]) for x in srcs if isinstance(x, dict) and "path" in x]
    for key, (_, name) in SIDE_FILES.items():
        opts[key] = getattr(b, key) or next((p for p in used if Path(p).name == name), None)
    if "station_lon" in ds:
        opts["emission_proxy_points"] = [[float(v) for v in ds["station_lon"].values],
                                         [float(v) for v in ds["station_lat"].values]]
    return {k: v for k, v in opts.items() if v is not None}


def _meta(cfg: TrainConfig, dm: Any, store_path: Path, run_id: str, run_name: str,
          metrics: dict[str, float]) -> dict[str, Any]:
    """Everything `load_model` callers need besides the weights (see models/artifact.py::ModelCard)."""
    from training import tracking

    ds, w = dm.ds, dm.windows()
    roles = json.loads(ds.attrs.get("roles", "{}"))
    names = [n for g in dm.channels.values() for n in g]
    b = cfg.data.build
    return {
        "format": tracking.FORMAT, "name": cfg.tracking.registered_model, "run_id": run_id, "run_name": run_name,
        "model_config": cfg.model, "channels": dm.channels, "dropped_channels": dm.dropped,
        "roles": {n: roles.get(n, roles.get(f"stn_{n[4:]}", "forcing")) for n in names},
        "norm_stats": json.loads(ds.attrs["norm_stats"]), "grid": ds.attrs["grid"],
        "history": cfg.data.history, "leads": cfg.data.leads, "species": ["pm25", "o3"],
        "quantiles": list(cfg.model.get("quantiles", (0.1, 0.5, 0.9))),
        "train_window": w["train"], "validation_window": w["val"],
        "held_out_stations": list(cfg.data.held_out_stations), "train_stations": dm.input_stations,
        "stations": dm.stations, "validation_metrics": metrics, "store": str(store_path),
        "store_options": _store_options(b, ds),
        "store_provenance": _maybe_json(ds.attrs.get("provenance")), "config": cfg.model_dump(mode="json"),
        "code_version": tracking.code_version(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
