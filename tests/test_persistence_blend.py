"""The P50's blend toward a cell's own init-hour observation (`p50_persist`, training/blend_fit.py; round 35)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_models import _inputs, _model

from training.blend_fit import fit_weights


def _observed(net, x) -> torch.Tensor:
    """[B, 1, 2, Y, X]: 1 where the cell observed PM2.5 / O3 at the init hour."""
    return (x[1][:, -1, net.species_idx] > 0.5).float().unsqueeze(1)


@pytest.mark.parametrize("members", [1, 2])
def test_blend_moves_the_p50_only_where_the_cell_observed_the_init_hour(members: int) -> None:
    net, cfg = _model(persistence_exact=True, members=members)
    x = _inputs(cfg)
    lead = getattr(net, "lead", net)
    with torch.no_grad():
        z, base = net.state(*x)
        fut = net.future_features(x[2], x[3])
        before = net.decode_parts(z, fut, base)[0]
        plain = net(*x)
        net.p50_persist[:, 0] = 0.5  # PM2.5 half-way to the init-hour observation at every lead
        net.p50_persist[:, 1] = torch.linspace(0.0, 1.0, cfg.leads)  # O3: none at +1 h, all of it at the last
        after = net.decode_parts(z, fut, base)[0]
        y = net(*x)
    obs = _observed(lead, x).expand_as(before) > 0.5
    assert obs.any() and (~obs).any()
    last = base[:, :2].unsqueeze(1).expand_as(before)
    a = net.p50_persist.reshape(1, cfg.leads, 2, 1, 1).expand_as(before)
    torch.testing.assert_close(after[obs], (before + a * (last - before))[obs])
    torch.testing.assert_close(after[~obs], before[~obs])
    torch.testing.assert_close(after[:, -1, 1][obs[:, -1, 1]], last[:, -1, 1][obs[:, -1, 1]])  # a = 1: persistence
    q_obs = obs.unsqueeze(3).expand_as(y)
    torch.testing.assert_close(y[~q_obs], plain[~q_obs])  # the unobserved cells' quantiles are untouched
    assert (y[q_obs] - plain[q_obs]).abs().max() > 0.1
    assert (y >= 0).all() and (y[:, :, :, 0] <= y[:, :, :, 1]).all() and (y[:, :, :, 1] <= y[:, :, :, 2]).all()


@pytest.mark.parametrize("members", [1, 2])
def test_weights_saved_without_the_blend_load_with_none(members: int) -> None:
    net, _ = _model(persistence_exact=True, members=members)
    sd = {k: v for k, v in net.state_dict().items() if not k.endswith("p50_persist")}
    fresh, _ = _model(persistence_exact=True, members=members)
    with torch.no_grad():
        fresh.p50_persist.fill_(0.7)
    fresh.load_state_dict(sd)
    assert torch.count_nonzero(fresh.p50_persist) == 0


def test_fit_recovers_weights_in_0_1_and_stops_at_the_bounds() -> None:
    rng = np.random.default_rng(0)
    n, n_l, s = 500, 3, 4
    p = rng.normal(0, 1, (n, n_l, 2, s))
    last = rng.normal(0, 1, (n, 2, s))
    want = np.array([[0.8, 0.45], [0.3, 0.0], [-0.2, 1.3]])  # two outside [0, 1]: fitted at the bound
    t = p + want[None, :, :, None] * (last[:, None] - p) + rng.laplace(0, 0.01, p.shape)
    last[::7, 0] = np.nan  # inits whose station did not observe PM2.5: not used
    t[::5, 1] = np.nan
    a = fit_weights(p, last, t)
    np.testing.assert_allclose(a, np.clip(want, 0, 1), atol=0.011)
    assert fit_weights(p, np.full_like(last, np.nan), t).max() == 0  # nothing observed at init: no blend


def test_training_fits_the_blend_on_the_training_period_and_registers_it(tmp_path: Path, tiny_store_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from training.config import load_config
    from training.export import parity, random_inputs, to_onnx
    from training.tracking import load_model
    from training.train import run_training

    monkeypatch.setenv("AQCAST_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml",
                      ["optim.persistence_blend_every_h=12", "tracking.log_plots=false"])
    said: list[str] = []
    run = run_training(cfg, store=str(tiny_store_path), run_name="blend", echo=said.append)
    net, meta = load_model(run["uri"])
    rep = meta["persistence_blend"]
    a = np.asarray(rep["p50_persist"])
    assert a.shape == (72, 2) and (a >= 0).all() and (a <= 1).all() and a.max() > 0
    from features.store import open_store
    from training.datamodule import init_times, resolve_periods

    ds = open_store(tiny_store_path)
    train_inits = init_times(ds, resolve_periods(ds, cfg)["train"], 12, 24, 72, "train")
    assert rep["n_inits"] == train_inits.size > 10  # the training period's inits 12 h apart, not validation's
    torch.testing.assert_close(net.p50_persist, torch.as_tensor(a, dtype=torch.float32), atol=0.005, rtol=0)
    assert any(m.startswith("fitting the P50's blend") for m in said)
    stats = meta["norm_stats"]
    x = random_inputs(meta["channels"], 24, 72, 8, 9, 2, 0, json.loads(stats) if isinstance(stats, str) else stats)
    to_onnx(net, x, tmp_path / "m.onnx")  # the buffer is inside the exported graph
    assert parity(net, tmp_path / "m.onnx", [x]).max_abs_diff_random < 1e-2
