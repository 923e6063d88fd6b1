"""`aqcast train` end to end on the tiny store with a real SQLite MLflow store in tmp_path."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
INPUTS = ("obs", "obs_mask", "forcing", "forcing_mask", "static")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory):
    """A private $AQCAST_HOME (SQLite store + artifacts + runs) for this module."""
    path = tmp_path_factory.mktemp("aqcast_home")
    old = os.environ.get("AQCAST_HOME")
    os.environ["AQCAST_HOME"] = str(path)
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield path
    if old is None:
        os.environ.pop("AQCAST_HOME", None)
    else:
        os.environ["AQCAST_HOME"] = old


@pytest.fixture(scope="module")
def trained(home: Path, tiny_store_path: Path) -> dict:
    """One CLI training run: its stdout lines and the run dir."""
    from typer.testing import CliRunner

    from training.cli import build_app

    res = CliRunner().invoke(build_app(), ["train", "--config", str(TINY), "--store", str(tiny_store_path),
                                           "--run-name", "e2e", "--set", "optim.seed=1"])
    assert res.exit_code == 0, (res.output, res.exception)
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    return {"lines": lines, "uri": lines[-1].strip(), "run_dir": home / "runs" / "e2e"}


def torch_load_step(path: Path) -> int:
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])


def _client(home: Path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{home / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_train_logs_registers_and_prints_uri(trained: dict, home: Path) -> None:
    assert re.fullmatch(r"models:/aqcast/\d+", trained["uri"]), trained["lines"][-3:]
    client = _client(home)
    mv = client.get_model_version_by_alias("aqcast", "challenger")
    assert trained["uri"] == f"models:/aqcast/{mv.version}"
    run = client.get_run(mv.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["stations.held_out"] == "Delta"
    assert "code_version" in run.data.tags and run.data.tags["store"]
    for key in ("final_val_mae_pm25_h24", "final_val_mae_o3_h72", "final_val_coverage_pm25", "train_seconds"):
        assert np.isfinite(run.data.metrics[key]), key
    by_lead = client.get_metric_history(run.info.run_id, "mae_pm25_by_lead")
    assert sorted(m.step for m in by_lead) == list(range(1, 73))
    arts = {a.path for a in client.list_artifacts(run.info.run_id)} | {
        a.path for a in client.list_artifacts(run.info.run_id, "plots")} | {
        a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"plots/skill_by_lead.png", "plots/forecast_map.png", "plots/station_series.png",
            "model/model.pt", "store_attrs.json", "config.json", "calibration.json"} <= arts
    state = json.loads((trained["run_dir"] / "state.json").read_text())
    assert state["status"] == "finished" and state["model_uri"] == trained["uri"]


def test_train_prints_a_progress_line_per_epoch_without_a_terminal(trained: dict) -> None:
    """Logs (no TTY, so no progress bar) still show training advancing, before the URI line."""
    epochs = [ln for ln in trained["lines"] if re.match(r"epoch \d+/\d+ step \d+: val_loss \d", ln)]
    assert epochs and trained["lines"].index(epochs[-1]) < len(trained["lines"]) - 1
    best = torch_load_step(trained["run_dir"] / "best.ckpt")
    assert f"registered weights: step {best}'s (best validation)" in trained["lines"]  # average_weights: none


def test_runs_lists_the_training_run_with_its_scores(trained: dict, home: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from training.cli import build_app

    out = tmp_path / "runs.md"
    res = CliRunner().invoke(build_app(), ["runs", "--experiment", "aqcast-tiny", "--out", str(out)])
    assert res.exit_code == 0, res.output
    row = next(ln for ln in out.read_text().splitlines() if ln.startswith("| e2e |"))
    client = _client(home)
    run = client.get_run(client.get_model_version_by_alias("aqcast", "challenger").run_id)
    assert f"{run.data.metrics['final_val_mae_pm25_h24']:.1f}" in row and trained["uri"] in row
    bad = CliRunner().invoke(build_app(), ["runs", "--experiment", "no-such-experiment"])
    assert bad.exit_code == 2 and "no MLflow experiment" in bad.output


def test_load_model_round_trips_predictions(trained: dict, home: Path, tiny_store_path: Path) -> None:
    import torch

    from features.windows import WindowSampler
    from models import build_model
    from training.tracking import load_model, set_alias

    net, meta = load_model(trained["uri"])
    assert meta["version"] and meta["run_id"] and meta["held_out_stations"] == ["Delta"]
    assert meta["channels"]["obs"][0] == "obs_pm25" and "grid" in meta and meta["leads"] == 72
    set_alias("aqcast", meta["version"], "champion")
    net2, _ = load_model("models:/aqcast@champion")
    net3, _ = load_model(f"runs:/{meta['run_id']}/model")
    # the weights of the best checkpoint, rebuilt independently
    ref = build_model(meta["model_config"], meta["channels"], meta["norm_stats"])
    sd = torch.load(trained["run_dir"] / "best.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    ref.load_state_dict({k.removeprefix("net."): v for k, v in sd.items()})
    ref.eval()
    s = WindowSampler(tiny_store_path, [np.datetime64("2021-01-16T00:00", "ns")], obs_vars=meta["channels"]["obs"],
                      forcing_vars=meta["channels"]["forcing"], static_vars=meta["channels"]["static"])[0]
    x = [torch.from_numpy(s[k][None]) for k in INPUTS]
    with torch.no_grad():
        outs = [m(*x) for m in (net, net2, net3, ref)]
    assert outs[0].shape == (1, 72, 2, 3, 16, 16)
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], rtol=0, atol=0)
    assert (outs[0] >= 0).all() and (outs[0][:, :, :, 0] <= outs[0][:, :, :, 2]).all()


def test_station_forward_matches_model(tiny_store_path: Path) -> None:
    import torch

    from training.config import load_config
    from training.datamodule import AQDataModule
    from training.module import AQModule, check_station_forward

    cfg = load_config(TINY)
    dm = AQDataModule(cfg, tiny_store_path)
    dm.setup()
    m = AQModule(cfg, dm.channels, json.loads(dm.ds.attrs["norm_stats"]))
    torch.nn.init.normal_(m.net.head.weight, std=0.1)  # non-trivial output
    batch = next(iter(dm.val_dataloader()))
    assert check_station_forward(m.net, batch) < 1e-3


def test_recent_training_inits_are_drawn_more_often(tiny_store_path: Path) -> None:
    """`data.recent_halflife_days`: the epoch's subset leans to the end of the training period, no repeats."""
    from training.config import load_config
    from training.datamodule import AQDataModule

    def ages(*extra: str) -> np.ndarray:
        dm = AQDataModule(load_config(TINY, ["data.max_train_samples=20", *extra]), tiny_store_path)
        dm.setup()
        t, idx = dm.train_ds.init_times, list(dm.train_dataloader().sampler)
        assert len(idx) == len(set(idx)) == 20 < len(t)
        return (t.max() - t[idx]) / np.timedelta64(1, "D")

    uniform, recent = ages(), ages("data.recent_halflife_days=2")
    assert uniform.mean() > 4 and recent.mean() < 0.6 * uniform.mean()


def _train_in_process(home: Path, store: Path, name: str, *extra: str) -> dict:
    from training.config import load_config
    from training.train import run_training

    cfg = load_config(TINY, ["optim.max_epochs=1", "tracking.log_plots=false", *extra])
    return run_training(cfg, store=str(store), run_name=name, echo=lambda s: None)


def test_a_model_that_refuses_the_store_is_a_clear_error(home: Path, tiny_store_path: Path) -> None:
    """A forcing asked in log1p space that can be negative (no log1p statistics in the store): one line naming the
    store, the config key and the channel, exit 2, no traceback."""
    res = subprocess.run([sys.executable, "-c", "from training.cli import main; main()", "train", "--config",
                          str(TINY), "--store", str(tiny_store_path), "--run-name", "refused",
                          "--set", "model.log_forcings=[met_t2m]"], capture_output=True, text=True, timeout=300,
                         check=False)
    assert res.returncode == 2, res.stderr
    assert f"{tiny_store_path}, key 'model': met_t2m is to be normalised in log1p space" in res.stderr
    assert "Traceback" not in res.stderr


def test_ema_weights_are_validated_and_registered(home: Path, tiny_store_path: Path) -> None:
    """With optim.ema_decay the checkpoint (and so the registered model) holds the averaged weights, and the
    raw weights travel beside them for --resume."""
    import torch

    from training.tracking import load_model

    run = _train_in_process(home, tiny_store_path, "ema", "optim.ema_decay=0.5", "optim.warmup_steps=0")
    ckpt = torch.load(Path(run["run_dir"]) / "best.ckpt", weights_only=False)
    avg, raw = ckpt["state_dict"], ckpt["current_model_state"]
    assert any(not torch.equal(avg[k], raw[k]) for k in avg if k.endswith("weight"))
    net, _ = load_model(run["uri"])
    k = "head.weight"
    assert torch.equal(net.state_dict()[k], avg[f"net.{k}"])


def test_reproducible_with_same_seed(home: Path, tiny_store_path: Path) -> None:
    import torch

    a = _train_in_process(home, tiny_store_path, "repro-a")
    b = _train_in_process(home, tiny_store_path, "repro-b")
    assert a["metrics"] == b["metrics"]
    sa = torch.load(Path(a["run_dir"]) / "best.ckpt", weights_only=False)["state_dict"]
    sb = torch.load(Path(b["run_dir"]) / "best.ckpt", weights_only=False)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from training.cli import main; main()", *args]


@pytest.mark.slow
def test_resume_after_kill(home: Path, tiny_store_path: Path) -> None:
    """Kill a training subprocess after a mid-epoch checkpoint; --resume continues it in the same MLflow run."""
    import torch

    run_dir = home / "runs" / "killme"
    env = dict(os.environ, AQCAST_HOME=str(home))
    common = ["train", "--config", str(TINY), "--store", str(tiny_store_path), "--run-name", "killme",
              "--set", "optim.checkpoint_every_n_steps=1", "--set", "tracking.log_plots=false"]
    proc = subprocess.Popen(_cli(*common, "--max-epochs", "50"), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    ckpt = run_dir / "last.ckpt"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if ckpt.is_file():
                try:
                    step = torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]
                except Exception:  # noqa: BLE001 - being written
                    step = 0
                if step >= 3:
                    break
            time.sleep(0.2)
        assert proc.poll() is None, "training ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    state = json.loads((run_dir / "state.json").read_text())
    assert state["status"] == "running"
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    out = subprocess.run(_cli(*common, "--resume", "--max-epochs", str(saved["epoch"] + 2)), env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
    assert re.fullmatch(r"models:/aqcast/\d+", lines[-1].strip())
    assert f"from global step {saved['global_step']}" in out.stdout
    after = json.loads((run_dir / "state.json").read_text())
    assert after["run_id"] == state["run_id"] and after["status"] == "finished"
    run = _client(home).get_run(state["run_id"])
    assert run.data.tags["resumed_from_step"] == str(saved["global_step"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["global_step"] > saved["global_step"]


def test_data_dir_builds_store_once_keyed_by_sha(home: Path, tiny_raw_dir: Path, monkeypatch) -> None:
    """--data builds the store under $AQCAST_HOME/stores/<sha>.zarr and reuses it while the inputs are unchanged."""
    from training.config import load_config
    from training.train import resolve_store

    cfg = load_config(TINY)
    msgs: list[str] = []
    first = resolve_store(cfg, None, str(tiny_raw_dir), msgs.append)
    assert first.parent == home / "stores" and first.exists() and msgs[-1].startswith("building")
    again = resolve_store(cfg, None, str(tiny_raw_dir), msgs.append)
    assert again == first and msgs[-1].startswith("reusing")
    other = resolve_store(load_config(TINY, ["data.build.res_km=5"]), None, str(tiny_raw_dir), msgs.append)
    assert other != first
    monkeypatch.setattr("features.store.STORE_VERSION", "999")  # a store written by older code is not reused
    newer = resolve_store(cfg, None, str(tiny_raw_dir), msgs.append)
    assert newer != first and msgs[-1].startswith("building")


def test_input_distance_channel_trains_registers_and_scores(home: Path, tiny_store_path: Path) -> None:
    """`input_distance_km` (computed per sample, not in the store): a run with it trains and registers, the
    model normalises it with the store's distance statistics, and the evaluation sampler built from the model's
    metadata reads the held-out station's cell as one without a station."""
    import xarray as xr

    from training.evaluate import make_sampler
    from training.tracking import load_model

    run = _train_in_process(home, tiny_store_path, "input-distance",
                            "data.static_vars=[static_elevation, input_distance_km]")
    net, meta = load_model(run["uri"])
    assert meta["channels"]["static"] == ["static_elevation", "input_distance_km"]
    stats = json.loads(xr.open_zarr(tiny_store_path).attrs["norm_stats"])["station_distance_km"]
    norm = net.static_norm.as_dict()["input_distance_km"]
    assert norm["mean"] == pytest.approx(stats["mean"]) and norm["std"] == pytest.approx(stats["std"])
    ds = xr.open_zarr(tiny_store_path).load()
    inits = np.array([np.datetime64("2021-01-16T00:00", "ns")])
    sampler, _ = make_sampler(ds, inits, meta, net, input_stations=["Alpha", "Bravo", "Charlie"])
    d = sampler[0]["static"][1]
    r, c = int(ds["station_row"][3]), int(ds["station_col"][3])  # Delta, held out of this model
    assert d[r, c] > 10 and ds["station_distance_km"].values[r, c] < 2.2
