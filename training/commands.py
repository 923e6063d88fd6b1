"""Command functions of `aqcast train`, `evaluate`, `backtest` and `promote` (heavy imports inside)."""
import typer


def train(
    config: str = typer.Option(..., "--config", "-c", help="training config YAML (configs/*.yaml)"),
    data: str = typer.Option(None, "--data", help="raw data directory: builds (or reuses) a store in $AQCAST_HOME"),
    store: str = typer.Option(None, "--store", help="feature store (zarr) to train on"),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (default: SQLite in "
                                     "$AQCAST_HOME)"),
    resume: bool = typer.Option(False, "--resume", help="continue the newest unfinished run of this config"),
    run_name: str = typer.Option(None, "--run-name", help="run name (directory under $AQCAST_HOME/runs)"),
    overrides: list[str] = typer.Option(None, "--set", help="override a config key, e.g. --set optim.lr=1e-3"),
    max_epochs: int = typer.Option(None, "--max-epochs", min=1, help="override optim.max_epochs"),
) -> None:
    """Train a model, log it to MLflow and register it; the last line printed is the model URI."""
    from training.config import load_config

    sets = list(overrides or []) + ([f"optim.max_epochs={max_epochs}"] if max_epochs else [])
    cfg = load_config(config, sets)  # validate before anything heavy runs
    from training.train import TrainingInterrupted, run_training

    try:
        res = run_training(cfg, store=store, data=data, tracking_uri=tracking_uri, resume=resume,
                           run_name=run_name, echo=typer.echo)
    except TrainingInterrupted as ex:
        typer.secho(str(ex), fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(130) from None
    m = res["metrics"]
    typer.echo(f"run {res['run_name']} (MLflow {res['run_id']}): {res['epochs']} epochs, "
               f"{res['global_step']} steps, {res['seconds']:.0f} s")
    w = res["weights"]
    typer.echo(f"registered weights: the mean of those at steps {w['steps']} (average_weights {w['method']})"
               if w["n"] > 1 else f"registered weights: step {w['steps'][0]}'s (best validation)")
    for sp in ("pm25", "o3"):
        row = "  ".join(f"+{h}h {m.get(f'val_mae_{sp}_h{h}', float('nan')):.1f}" for h in (24, 48, 72))
        held = "  ".join(f"+{h}h {m[f'val_mae_heldout_{sp}_h{h}']:.1f}" for h in (24, 48, 72)
                         if f"val_mae_heldout_{sp}_h{h}" in m)
        typer.echo(f"val MAE {sp}: {row}" + (f"   held-out: {held}" if held else "")
                   + f"   P10-P90 coverage {100 * m.get(f'val_coverage_{sp}', float('nan')):.0f} %")
    if res.get("schedule") and not res.get("warnings"):
        typer.echo(f"schedule: {res['schedule']}")
    for w in res.get("warnings", []):  # said during training too, where Lightning's output can bury it
        typer.secho(f"warning: {w}", fg=typer.colors.YELLOW, err=True)
    typer.echo(res["uri"])


def _start_verification(t_from: str, t_to: str) -> None:
    """What `evaluate` and `backtest` do first: say so on stderr when --from / --to carry no UTC offset (read
    as UTC), and keep freed memory in the heap (M25)."""
    from training.evaluate import naive_time_warning
    from training.heap import retain_freed_memory

    for ts, what in ((t_from, "--from"), (t_to, "--to")):
        if msg := naive_time_warning(ts, what):
            typer.secho(f"warning: {msg}", fg=typer.colors.YELLOW, err=True)
    retain_freed_memory()


def evaluate(
    model: str = typer.Option(..., "--model", help="models:/aqcast/3, models:/aqcast@champion, or a local path"),
    data: str = typer.Option(None, "--data", help="data directory in the ../shared/data/beijing layout"),
    store: str = typer.Option(None, "--store", help="feature store (zarr) on the model's grid, instead of "
                              "building one from --data"),
    t_from: str = typer.Option(..., "--from", help="first init time, ISO 8601 with offset"),
    t_to: str = typer.Option(..., "--to", help="last init time, ISO 8601 with offset"),
    every: str = typer.Option("6h", "--every", help="init spacing, e.g. 6h, 24h"),
    held_out: str = typer.Option("", "--held-out", help="comma-separated stations kept out of the inputs"),
    out: str = typer.Option("evaluation", "--out", help="directory for scorecard.md and skill_by_lead.png"),
    name: str = typer.Option(None, "--name", help="file stem: NAME.md and NAME.png instead of the defaults"),
    met_error: bool = typer.Option(False, "--met-error", help="add lead-growing met forecast error"),
    gbt: bool = typer.Option(True, "--gbt/--no-gbt", help="score the GBT reference at the input stations "
                             "(fitted on the training period, cached in $AQCAST_HOME/cache)"),
    mlflow_log: bool = typer.Option(True, "--mlflow/--no-mlflow", help="log metrics and scorecard to MLflow"),
    rolling_bands: float = typer.Option(0.0, "--rolling-bands", min=0, help="rescale the P10/P90 band at each "
                                        "init from the forecasts verified in this many trailing days (0: off)"),
) -> None:
    """Score a model on DIR: scorecard (markdown + PNG skill by lead), metrics into MLflow."""
    import json
    import os
    import shlex
    import sys

    import torch

    from features.errors import DataError
    from training.domain import build_store_for, grid_from_meta
    from training.evaluate import evaluate_model, load_model, log_to_mlflow
    from training.evaluate_gbt import training_budget

    if not data and not store:
        raise DataError("give --data DIR or --store PATH")
    _start_verification(t_from, t_to)
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    net, meta = load_model(model)
    if store:
        from features.store import open_store, store_grid

        ds = open_store(store)
        if store_grid(ds) != grid_from_meta(meta):
            raise DataError(f"--store {store} is not on the model's grid; use --data to rebuild it")
        _check_store_clock(ds, meta, store)
    else:
        ds = build_store_for(data, meta, echo=lambda m: typer.echo(f"note: {m}", err=True))
    stations = [s.strip() for s in held_out.split(",") if s.strip()] or None
    env = f"AQCAST_HOME={os.environ['AQCAST_HOME']} " if os.environ.get("AQCAST_HOME") else ""
    notes = [f"command: `{env}aqcast {shlex.join(sys.argv[1:])}`"]
    off = json.loads(ds.attrs.get("dropped_stations", "{}"))
    notes += [f"not inputs and not scored, off the model's grid: {', '.join(off)}"] if off else []
    budget = training_budget(meta)
    members = int((meta.get("model_config") or {}).get("members", 1))
    label = f"{model} (mean of {members} networks in one graph)" if members > 1 else model
    notes += [f"model {label}; training budget: {budget}"] if budget else [f"model {label}"]
    rep = evaluate_model(net, meta, ds, t_from, t_to, every, stations, out, met_error=met_error, gbt=gbt,
                         source=store or data, name=name, extra_notes=notes,
                         echo=lambda m: typer.echo(m, err=True), rolling_bands=rolling_bands)
    typer.echo(rep["scorecard"].read_text())
    typer.echo(f"scorecard: {rep['scorecard']}  plot: {rep['png']}")
    if mlflow_log:
        run_id = log_to_mlflow(rep, meta, {"model": model, "data": data, "store": store, "from": t_from,
                                           "to": t_to, "every": every, "held_out": ",".join(rep["held_out"]),
                                           "met_error": met_error, "gbt": gbt, "rolling_bands": rolling_bands})
        typer.echo(f"mlflow run: {run_id}")


def backtest(
    model: str = typer.Option(..., "--model", help="models:/aqcast/3, models:/aqcast@champion, or a local path"),
    data: str = typer.Option(..., "--data", help="data directory in the ../shared/data/beijing layout"),
    t_from: str = typer.Option(..., "--from", help="first init time, ISO 8601 with offset (sets output offset)"),
    t_to: str = typer.Option(..., "--to", help="last init time, ISO 8601 with offset"),
    every: str = typer.Option("24h", "--every", help="init spacing, e.g. 24h"),
    points: str = typer.Option(..., "--points", help="CSV with point_id,lon,lat"),
    out: str = typer.Option(..., "--out", help="output CSV (init_time,lead_hours,point_id,species,p10,p50,p90)"),
    met_error: bool = typer.Option(False, "--met-error", help="add lead-growing met forecast error"),
    seed: int = typer.Option(0, "--seed", help="seed of the --met-error draws"),
    batch_size: int = typer.Option(16, "--batch-size"),
    rolling_bands: float = typer.Option(30.0, "--rolling-bands", min=0, help="at points in a station's cell, "
                                        "rescale each init's P10/P90 band from the forecasts verified at the "
                                        "data's stations in this many trailing days (0: the model's own band)"),
) -> None:
    """Forecasts at points for every init time (only observations up to each init are used)."""
    from training.backtest import backtest_command

    _start_verification(t_from, t_to)
    df = backtest_command(model, data, t_from, t_to, every, points, out, met_error, seed, batch_size,
                          echo=lambda m: typer.echo(m, err=True), rolling_bands=rolling_bands)
    if rolling_bands:
        typer.echo(f"P10/P90 at points in a station's cell: rescaled at each init from the forecasts verified there "
                   f"in the {rolling_bands:g} days before it (those issued before --from on the same cadence "
                   "included where the data allow; the model's own band until some are verified), as `aqcast serve` "
                   "does (--rolling-bands 0: the model's own band throughout)", err=True)
    typer.echo(f"wrote {len(df)} rows to {out}")


def promote(
    version: int = typer.Argument(..., help="Registered model version to promote, e.g. 3."),
    alias: str = typer.Option("champion", help="Alias to move onto that version."),
    name: str = typer.Option("aqcast", help="Registered model name."),
    tracking_uri: str = typer.Option(None, help="MLflow tracking URI (default: embedded SQLite store)."),
) -> None:
    """Point a registry alias (default `champion`) at a model version; `aqcast serve` resolves it at start."""
    from training.tracking import set_alias

    set_alias(name, version, alias, tracking_uri)
    typer.echo(f"models:/{name}@{alias} -> models:/{name}/{version}")


def _check_store_clock(ds, meta: dict, store: str) -> None:
    """Warn when a store's weather clock was judged against a first year that runs whole hours off the model's
    (a store of a later year alone, built by `aqcast features build`): `--data` rebuilds it on the model's clock."""
    import json

    from features.clock import reference_offset

    ref = (meta.get("store_options") or {}).get("weather_clock_reference")
    mine = (json.loads(ds.attrs.get("weather_clock", "{}")) or {}).get("reference_phases")
    lag = reference_offset(mine, ref) if ref and mine else None
    if lag is not None and abs(lag) >= 0.5:
        typer.echo(f"warning: --store {store} judged its weather clock against a first year {lag:+.1f} h off the "
                   "clock the model was trained on, so its weather may run that far off the model's; --data DIR "
                   "rebuilds the inputs on the model's clock", err=True)
