"""Evaluation on a data directory (scorecard, metrics) + helpers shared with backtest: store on the model grid,
padded windows, batched model runs, synthetic met forecast error."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.errors import DataError
from training.domain import build_store_for, grid_from_meta  # noqa: F401  (re-exported: their old home)

HOUR = np.timedelta64(3600 * 10**9, "ns")
# Forecast-error growth for --met-error: sigma(lead) = a + b * lead / 72 (typical NWP 2 m / 10 m errors)
MET_ERROR = {"t2m": (0.8, 1.7), "d2m": (1.0, 2.0), "sp": (0.4, 1.6), "u10": (1.0, 1.5), "v10": (1.0, 1.5),
             "ws": (0.8, 1.2), "rh": (6.0, 9.0), "blh": (80.0, 150.0), "ssr": (30.0, 60.0)}
MET_ERROR_REL = {"tp": 0.5}  # precipitation: multiplicative log-normal error


def parse_every(every: str | int) -> int:
    """'24h' / '6' / '1d' -> hours."""
    if isinstance(every, int):
        return every
    m = re.fullmatch(r"\s*(\d+)\s*([hHdD]?)\s*", str(every))
    if not m or int(m.group(1)) <= 0:
        raise DataError(f"--every must look like '24h', '6h' or '1d', got {every!r}")
    return int(m.group(1)) * (24 if m.group(2).lower() == "d" else 1)


def parse_time(ts: str, what: str) -> tuple[np.datetime64, str]:
    """ISO 8601 -> (UTC datetime64[ns], offset string '+08:00' or '+00:00' when naive)."""
    try:
        t = pd.Timestamp(ts)
    except (ValueError, TypeError) as e:
        raise DataError(f"{what}: not an ISO 8601 time: {ts!r} ({e})") from None
    if t.tzinfo is None:
        return np.datetime64(t.to_datetime64(), "ns"), "+00:00"
    off = t.strftime("%z")
    return np.datetime64(t.tz_convert("UTC").tz_localize(None).to_datetime64(), "ns"), f"{off[:3]}:{off[3:]}"


def naive_time_warning(ts: str, what: str) -> str | None:
    """A warning when `ts` has no UTC offset (parse_time reads it as UTC), else None."""
    try:
        naive = pd.Timestamp(ts).tzinfo is None
    except (ValueError, TypeError):
        return None  # parse_time says what is wrong with it
    if not naive:
        return None
    return (f"{what} {ts} has no UTC offset and is read as UTC ({ts}+00:00, and the output says +00:00); "
            f"give the offset, e.g. {ts}+08:00 for Beijing time")


def init_times(t0: np.datetime64, t1: np.datetime64, every_h: int) -> np.ndarray:
    """t0, t0 + every, ... <= t1 (UTC)."""
    if t1 < t0:
        raise DataError(f"--to ({t1}) is before --from ({t0})")
    n = int((t1 - t0) // (every_h * HOUR)) + 1
    return t0 + np.arange(n) * every_h * HOUR


def pad_time(ds, start: np.datetime64, end: np.datetime64):
    """Reindex the store's time axis to cover [start, end] (missing hours NaN -> masked, never invented)."""
    times = ds["time"].values.astype("datetime64[ns]")
    lo, hi = min(times[0], start), max(times[-1], end)
    if lo == times[0] and hi == times[-1]:
        return ds
    full = lo + np.arange(int((hi - lo) // HOUR) + 1) * HOUR
    return ds.reindex(time=full)


def channels_of(meta: dict[str, Any], model: Any) -> dict[str, list[str]]:
    """Channel names in order, from metadata or the model itself."""
    ch = meta.get("channels")
    if ch:
        return {k: list(ch.get(k, [])) for k in ("obs", "forcing", "static")}
    return {"obs": list(model.obs_names), "forcing": list(model.forcing_names), "static": list(model.static_names)}


def time_window(ds, start: np.datetime64, end: np.datetime64):
    """The store's hours within [start, end] (a view, no copy); the whole store when none fall there."""
    times = ds["time"].values.astype("datetime64[ns]")
    i0, i1 = np.searchsorted(times, start), np.searchsorted(times, end, side="right")
    return ds.isel(time=slice(i0, i1)) if i1 > i0 else ds


def make_sampler(ds, inits: np.ndarray, meta: dict[str, Any], model: Any, **kw):
    """WindowSampler over `inits` with the model's channels, on the store's hours those windows need only (the
    sampler loads its arrays once: a chunk of inits costs its own hours, not the record's), padded so every init
    has a window."""
    from features.windows import COMPUTED_CHANNELS, WindowSampler

    h = int(meta.get("history", getattr(getattr(model, "cfg", None), "history", 24)))
    n_l = int(meta.get("leads", getattr(getattr(model, "cfg", None), "leads", 72)))
    start, end = inits.min() - (h - 1) * HOUR, inits.max() + n_l * HOUR
    ds = pad_time(time_window(ds, start, end), start, end)
    ch = channels_of(meta, model)
    missing = [v for v in ch["obs"] + ch["forcing"] + ch["static"]
               if v not in ds and v not in COMPUTED_CHANNELS and f"stn_{v[4:]}" not in ds]
    if missing:
        raise DataError(f"the data lack channels the model needs: {missing}")
    return WindowSampler(ds, inits, history=h, leads=n_l, obs_vars=ch["obs"], forcing_vars=ch["forcing"],
                         static_vars=ch["static"], **kw), ds


def add_met_error(sample: dict[str, np.ndarray], forcing_names: list[str], history: int,
                  rng: np.random.Generator, rho: float = 0.95) -> None:
    """In place: future forcing (valid > init) of met channels gets a lead-growing, lead-correlated error.

    Error e(lead) = sigma(lead) * z(lead), z an AR(1) over leads (unit variance, rho), one draw per init and
    channel, spatially uniform (synoptic-scale error). Only where the forcing is real (mask 1)."""
    f, m = sample["forcing"], sample["forcing_mask"]
    n_l = f.shape[0] - history
    lead = np.arange(1, n_l + 1)
    z = np.empty(n_l)
    for c, name in enumerate(forcing_names):
        base = name[4:] if name.startswith("met_") else None
        if base not in MET_ERROR and base not in MET_ERROR_REL:
            continue
        z[0] = rng.standard_normal()
        for k in range(1, n_l):
            z[k] = rho * z[k - 1] + np.sqrt(1 - rho**2) * rng.standard_normal()
        fut = f[history:, c]
        if base in MET_ERROR:
            a, b = MET_ERROR[base]
            noisy = fut + ((a + b * lead / 72.0) * z)[:, None, None]
            if base in ("ws", "blh", "ssr", "rh"):
                noisy = np.clip(noisy, 0, 100 if base == "rh" else None)
        else:
            noisy = fut * np.exp(MET_ERROR_REL[base] * z * np.sqrt(lead / 72.0))[:, None, None]
        f[history:, c] = np.where(m[history:, c] > 0, noisy, fut).astype(f.dtype)


def run_model(model: Any, sampler, batch_size: int = 16, met_error: bool = False, seed: int = 0,
              forcing_names: list[str] | None = None, echo=None,
              cells: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Forecast every sampler item -> [N, L, 2, 3, Y, X] float32 (ug m-3), or with `cells` = (rows, cols) only
    those cells, [N, L, 2, 3, P], gathered batch by batch (a year of grids is GBs; its stations are MBs).
    Progress: a bar on a terminal for long runs; with `echo` and no bar (a log, CI), about ten
    `forecast: i/N inits` lines instead."""
    import torch

    keys = ("obs", "obs_mask", "forcing", "forcing_mask", "static")
    rng = np.random.default_rng(seed)
    outs = []
    model.eval()
    from tqdm.auto import tqdm

    starts = range(0, len(sampler), batch_size)
    bar = tqdm(starts, desc="forecast", unit="batch", disable=None if len(sampler) > 64 else True)
    every = max(1, len(starts) // 10)
    with torch.no_grad():  # a bar only for long runs (backtest chunks are short and have their own)
        for k, b0 in enumerate(bar):
            if echo and bar.disable and k % every == 0:
                echo(f"forecast: {b0}/{len(sampler)} inits")
            items = [sampler[i] for i in range(b0, min(b0 + batch_size, len(sampler)))]
            if met_error:
                for it in items:
                    add_met_error(it, forcing_names or sampler.forcing_vars, sampler.history, rng)
            x = [torch.from_numpy(np.stack([it[k] for it in items])) for k in keys]
            out = model(*x).numpy()
            outs.append((out if cells is None else out[..., cells[0], cells[1]]).astype(np.float32))
    return np.concatenate(outs) if outs else np.zeros((0,), np.float32)


def load_model(uri: str) -> tuple[Any, dict[str, Any]]:
    """(module, meta) via `training.tracking.load_model` (registry URIs, run URIs, local paths)."""
    try:
        from training.tracking import load_model as _load
    except ImportError as e:  # pragma: no cover - depends on the training side being installed
        raise DataError(f"cannot load models: training.tracking unavailable ({e})") from None
    model, meta = _load(uri)
    return model, dict(meta or {})


def station_split(ds, meta: dict[str, Any], held_out: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(input/training stations, held-out stations) of the store. Held out: `held_out`, the model's own
    `meta['held_out_stations']`, and stations absent from `meta['train_stations']` (when listed)."""
    stations = [str(s) for s in ds["station"].values]
    out = set(held_out or []) | set(meta.get("held_out_stations") or [])
    if meta.get("train_stations"):
        out |= set(stations) - set(meta["train_stations"])
    unknown = [s for s in (held_out or []) if s not in stations]
    if unknown:
        raise DataError(f"--held-out: unknown station(s) {unknown}; the data have {stations}")
    return [s for s in stations if s not in out], [s for s in stations if s in out]


def forecast_at_stations(model: Any, meta: dict[str, Any], ds, inits: np.ndarray, inputs: list[str],
                         batch_size: int = 16, met_error: bool = False,
                         echo=None) -> tuple[np.ndarray, np.ndarray, list]:
    """-> (pred [N, L, 2, 3, S], obs [N, L, 2, S] NaN-missing, station names); inputs = stations fed to obs."""
    sampler, _ = make_sampler(ds, inits, meta, model, input_stations=inputs)
    cells = sampler.station_row.astype(int), sampler.station_col.astype(int)
    pred = run_model(model, sampler, batch_size, met_error, echo=echo, cells=cells)
    return pred, station_obs(sampler), sampler.target_stations


def station_obs(sampler) -> np.ndarray:
    """The sampler's observations at its target stations over the leads, [N, L, 2, S], NaN where missing."""
    return np.stack([np.where(it["target_mask"] > 0, it["target"], np.nan)
                     for it in (sampler[i] for i in range(len(sampler)))])


def evaluate_model(model: Any, meta: dict[str, Any], ds, t_from: str, t_to: str, every: str | int = "6h",
                   held_out: list[str] | None = None, out_dir: str | Path = ".", batch_size: int = 16,
                   met_error: bool = False, gbt: bool = True, gbt_kw: dict | None = None, source: str = "",
                   name: str | None = None, extra_notes: list[str] | None = None, gbt_cache: str | None = None,
                   echo=None, rolling_bands: float = 0.0) -> dict[str, Any]:
    """Score the model on the store `ds` (on its grid) for inits in [t_from, t_to]; write scorecard md + png
    (`name`.md / `name`.png, default scorecard.md / skill_by_lead.png).

    References: persistence and climatology/blend fitted on the data before `t_from` (training data only) for
    training stations, plus (`gbt`) the GBT reference fitted on the training period at the input stations
    (`training.evaluate_gbt`, cached by `source`, the data's provenance and the period); IDW persistence of the
    input stations and the pooled climatology for held-out ones (the GBT needs the point's own history).
    `rolling_bands` > 0: at the input stations, the P10/P90 band rescaled at each init from their forecasts
    verified in that many trailing days (`models.rolling_bands`); held-out stations keep the model's band."""
    from models.baselines import BaselineSuite, idw_persistence
    from models.stations import StationSeries
    from training.evaluate_gbt import acceptance, block_inits, gbt_forecast, margin_interval, ref_mae, summary
    from training.metrics import evaluate_forecast
    from training.scorecard import flat_metrics, markdown, plot

    t0, _ = parse_time(t_from, "--from")
    t1, _ = parse_time(t_to, "--to")
    every_h = parse_every(every)
    inits = init_times(t0, t1, every_h)
    inputs, held = station_split(ds, meta, held_out)
    if not inputs:
        raise DataError("no input stations left: every station is held out")
    if echo:
        echo(f"forecasting {inits.size} inits on the model grid ({len(inputs)} input stations)")
    pred, obs, names = forecast_at_stations(model, meta, ds, inits, inputs, batch_size, met_error, echo)
    band_notes = []
    if rolling_bands > 0:
        before = earlier_at_stations(model, meta, ds, inits[0], every_h, rolling_bands, inputs, batch_size)
        pred = rescale_bands(pred, obs, inits, np.isin(names, inputs), rolling_bands, before)
        band_notes = [(f"P10/P90 band at the input stations rescaled at each init from their forecasts verified in "
                       f"the {rolling_bands:g} days before it, those issued before --from included "
                       "(--rolling-bands, models/rolling_bands.py); held-out stations: the model's band")]
    if echo:
        echo("references: persistence, climatology and their blend, fitted on the data before --from ...")
    n_l = pred.shape[1]
    ds_p = pad_time(ds, inits.min() - 24 * HOUR, inits.max() + n_l * HOUR)
    ss = StationSeries(ds_p["time"].values.astype("datetime64[ns]"), names,
                       ds_p["station_lon"].values.astype(float), ds_p["station_lat"].values.astype(float),
                       {p: ds_p[f"stn_{p}"].transpose("time", "station").values.astype(float)
                        for p in ("pm25", "o3")})
    y = ss.species()
    idx = ((inits - ss.times[0]) // HOUR).astype(int)
    train_rows = ss.times < t0
    is_in = np.isin(names, inputs)
    refs_in: dict[str, np.ndarray] = {}
    refs_out: dict[str, np.ndarray] = {}
    tr_init = np.flatnonzero(train_rows)
    tr_init = tr_init[(tr_init >= 24) & (tr_init + n_l < train_rows.sum())][::3]
    if train_rows.sum() >= 24 * 7 and tr_init.size > 10:  # at least a week of training data
        yin = np.where(is_in[None, None, :], y, np.nan)  # climatology from input stations only
        suite = BaselineSuite(leads=n_l, utc_offset_h=ss.utc_offset_h).fit(yin, ss.times, train_rows, tr_init)
        clim_cols = np.where(is_in, np.arange(len(names)), -1)
        bp = {k: v[:, :, :, 1] for k, v in suite.predict(y, ss.times, idx, clim_cols).items()}
        refs_in = {"persistence": bp["persistence"], "climatology": bp["climatology"], "blend": bp["blend"]}
        refs_out = {"climatology": bp["climatology"]}
    else:
        from models.baselines import persistence

        refs_in = {"persistence": persistence(y, idx, n_l)}
    lonlat = np.stack([ss.lon, ss.lat], 1)
    if (~is_in).any():
        refs_out["idw_persistence"] = idw_persistence(y[:, :, is_in], idx, lonlat[is_in], lonlat, n_l)
    gbt_note = "GBT reference: off (--no-gbt)"
    if gbt:
        g, how = gbt_forecast(ds_p, meta, inits, inputs, list(names), n_l, t0, source, gbt_kw, gbt_cache,
                              echo or (lambda _m: None))
        refs_in["gbt"] = g[:, :, :, 1]
        gbt_note = ("GBT reference (models/gbt.py, HistGradientBoosting quantile, observed = perfect met like the "
                    f"deep model) at the input stations, {how.split(', cached')[0]}; scored on the same "
                    "(init, lead, station) samples as the deep model. Held-out stations: GBT cannot forecast "
                    "there (it needs the point's own pollutant history), so the references are IDW persistence "
                    "of the input stations and the pooled climatology")
    if echo:
        echo("scoring by lead and station group; the margin over the trees resampled by weeks ...")
    results, summ = {}, {}
    for group, sel, refs in (("train_stations", is_in, refs_in), ("held_out_stations", ~is_in, refs_out)):
        if sel.any():
            r = {k: v[..., sel] for k, v in refs.items()}
            results[group] = evaluate_forecast(pred[..., sel], obs[..., sel], r)
            if "gbt" in r:
                results[group]["mae_ref_gbt"], results[group]["n_ref_gbt"] = ref_mae(pred[..., 1, sel], r["gbt"],
                                                                                     obs[..., sel])
            summ[group] = summary(pred[..., 1, sel], obs[..., sel], r)
            if "gbt" in r:  # how sure the margin over the trees is: resample weeks of inits
                summ[group]["gbt_margin_ci"] = margin_interval(pred[..., 1, sel], r["gbt"], obs[..., sel],
                                                               block=block_inits(every_h))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    notes = list(extra_notes or []) + [
        f"inits {inits[0]} .. {inits[-1]} UTC every {every_h} h ({inits.size})",
        f"input stations: {', '.join(inputs)}", f"held-out stations: {', '.join(held) or 'none'}",
        "meteorology over the horizon: " + ("observed + synthetic forecast error (--met-error)" if met_error
                                            else "the observed weather, used as a perfect forecast"),
        gbt_note, "PM2.5 IAQI: 24-h breakpoints applied to hourly values; O3: 1-h breakpoints"]
    notes += _calibration_note(meta, t0, t1) + band_notes
    md = out_dir / f"{name or 'scorecard'}.md"
    md.write_text(markdown(results, f"aqcast scorecard — {meta.get('name', 'model')}", notes, summ,
                           acceptance(results, summ)))
    png = plot(results, out_dir / f"{name or 'skill_by_lead'}.png", "MAE and skill by lead")
    return {"results": results, "metrics": flat_metrics(results), "scorecard": md, "png": png,
            "inputs": inputs, "held_out": held, "summary": summ}


def earlier_at_stations(model: Any, meta: dict[str, Any], ds, first: np.datetime64, every_h: int,
                        window_days: float, inputs: list[str], batch_size: int = 16) -> tuple | None:
    """(inits, pred, obs) at the stations for the inits before `first` on its cadence that reach into the rolled
    window there and have a full history in `ds`; None when there are none."""
    from models.rolling_bands import earlier_inits

    e = earlier_inits(first, every_h, window_days, int(meta["leads"]),
                      ds["time"].values[0] + (int(meta["history"]) - 1) * HOUR).astype(first.dtype)
    return (e, *forecast_at_stations(model, meta, ds, e, inputs, batch_size)[:2]) if e.size else None


def rescale_bands(pred: np.ndarray, obs: np.ndarray, inits: np.ndarray, verify: np.ndarray,
                  window_days: float, before: tuple | None = None) -> np.ndarray:
    """pred [N, L, 2, 3, S] with both gaps scaled per init and species by the trailing window's factor, fitted
    on and applied to the stations where `verify` [S] is true (observations obs [N, L, 2, S] at each valid time;
    `before`: the (inits, pred, obs) issued before the first init); the others (held out: no station reports
    there) keep the model's band."""
    from models.rolling_bands import apply_factors, band_factors, band_z

    z = band_z(np.moveaxis(pred[..., verify], 3, -1), obs[..., verify])
    hist = (None, None) if before is None else (before[0], band_z(np.moveaxis(before[1][..., verify], 3, -1),
                                                                  before[2][..., verify]))
    return apply_factors(pred, band_factors(inits, z, *hist, window_days=window_days), where=verify)


def _calibration_note(meta: dict[str, Any], t0: np.datetime64, t1: np.datetime64) -> list[str]:
    """Say when the P10/P90 band was calibrated on inits inside the scored period (its coverage is then
    in-sample; the calibration's cross-fit by month in MLflow is the out-of-sample estimate)."""
    win = meta.get("validation_window")
    if not meta.get("quantile_calibration") or not win:
        return []
    a, _ = parse_time(win[0], "validation_window")
    b, _ = parse_time(win[1], "validation_window")
    if a > t1 or b < t0:
        return [f"P10/P90 band calibrated on {win[0]} .. {win[1]}, outside this period: coverage is out of sample"]
    note = (f"P10/P90 band calibrated on the input stations of {win[0]} .. {win[1]}, which overlaps this period: "
            "coverage at input stations is in-sample (cross-fit by month: MLflow `calib_crossfit_*`); held-out "
            "stations never enter the calibration")
    return [note]


def log_to_mlflow(report: dict[str, Any], meta: dict[str, Any], params: dict[str, Any]) -> str | None:
    """Log scalars + scorecard artifacts to MLflow (the model's run when known, else a new 'evaluate' run)."""
    import mlflow

    try:
        from training.tracking import tracking_uri

        mlflow.set_tracking_uri(tracking_uri())
    except ImportError:
        import os

        home = Path(os.environ.get("AQCAST_HOME", ".aqcast"))
        home.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(f"sqlite:///{home.resolve() / 'mlflow.db'}")
    mlflow.set_experiment("aqcast-evaluate")
    with mlflow.start_run(run_name="evaluate") as run:
        mlflow.set_tags({"kind": "evaluate", "model_run_id": str(meta.get("run_id")),
                         "model_uri": str(params.get("model"))})
        mlflow.log_params({k: str(v)[:250] for k, v in params.items()})
        m = {k.replace("@", "_"): v for k, v in report["metrics"].items()}
        mlflow.log_metrics(m)
        mlflow.log_artifact(str(report["scorecard"]))
        mlflow.log_artifact(str(report["png"]))
        return run.info.run_id
