"""AQEnsemble (`model.members > 1`): the member mean, independent members each on its own loss, one
calibration, one registered model and one ONNX graph."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models import build_model
from models.config import ModelConfig
from models.ensemble import AQEnsemble
from models.net import AQNet

ROOT = Path(__file__).resolve().parents[1]
OBS = ["obs_pm25", "obs_pm10", "obs_no2", "obs_o3"]
FORC = ["met_t2m", "met_sp", "met_u10", "met_v10", "hour_sin", "hour_cos"]
CH = {"obs": OBS, "forcing": FORC, "static": ["static_elevation"]}
STATS = {"obs_pm25": {"mean": 80.0, "std": 80.0, "mean_log1p": 3.9, "std_log1p": 1.0},
         "obs_o3": {"mean": 57.0, "std": 55.0, "mean_log1p": 3.4, "std_log1p": 1.3},
         "met_sp": {"mean": 1010.0, "std": 10.0}, "static_elevation": {"mean": 200.0, "std": 300.0}}
SMALL = {"history": 6, "leads": 5, "hidden": 8, "decoder_hidden": 8, "dilations": [1, 2],
         "spread_sigmas": [1.0, 3.0], "spread_recent": 2, "spread_stride": 2, "history_forcing_stride": 2,
         "persistence_exact": True, "forcing_windows": [3]}


def _inputs(cfg: ModelConfig, b=2, ny=9, nx=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, n_l = cfg.history, cfg.leads
    mask = (torch.rand(b, h, len(OBS), ny, nx, generator=g) < 0.15).float()
    obs = torch.rand(b, h, len(OBS), ny, nx, generator=g) * 150 * mask
    hours = torch.arange(h + n_l, dtype=torch.float32) * 2 * np.pi / 24
    forcing = torch.randn(b, h + n_l, len(FORC), ny, nx, generator=g)
    forcing[:, :, 1] += 1010
    forcing[:, :, 4], forcing[:, :, 5] = (torch.sin(hours)[None, :, None, None].expand(b, -1, ny, nx),
                                          torch.cos(hours)[None, :, None, None].expand(b, -1, ny, nx))
    return obs, mask, forcing, torch.ones_like(forcing), torch.rand(b, 1, ny, nx, generator=g) * 500


def _ensemble(members=2, **kw):
    torch.manual_seed(0)
    return build_model({**SMALL, "members": members, **kw}, CH, STATS).eval()


def _randomise(net: torch.nn.Module, seed: int) -> None:
    """Non-trivial weights (zero-initialised layers would hide a wrong member mean)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(("weight", "lead_emb")):
                p.add_(0.1 * torch.randn(p.shape, generator=g))


def test_build_model_chooses_by_members_and_validates():
    assert isinstance(_ensemble(3), AQEnsemble) and isinstance(_ensemble(1), AQNet)
    assert len(_ensemble(3).members) == 3
    with pytest.raises(ValueError):
        ModelConfig(**SMALL, members=0)


def test_members_start_from_different_weights_and_the_first_is_the_single_net():
    ens, single = _ensemble(2), _ensemble(1)
    a, b = (dict(m.named_parameters()) for m in ens.members)
    assert any(not torch.equal(a[k], b[k]) for k in a if k.endswith("weight"))
    for k, v in single.named_parameters():  # same seed: member 0 is the net a single run would train
        assert torch.equal(v, a[k]), k


def test_forecast_is_the_member_mean_in_log_space_then_calibrated():
    ens = _ensemble(2)
    _randomise(ens, 1)
    cfg = ens.cfg
    x = _inputs(cfg)
    with torch.no_grad():
        y = ens(*x)
        members = ens.forward_members(*x)  # each member alone, uncalibrated
        ens.gap_scale.fill_(2.0)
        wide = ens(*x)
    assert members.shape == (2, 2, cfg.leads, 2, 3, 9, 10)
    assert not torch.allclose(members[0], members[1])
    # quantile by quantile, the mean of the members' log1p values (normalised per species: affine)
    want = torch.expm1(torch.log1p(members).mean(0))
    pos = (members > 0).all(0)  # away from the relu at zero (a member's P10 below 0 is clipped)
    assert pos.float().mean() > 0.95
    torch.testing.assert_close(y[pos], want[pos], rtol=1e-4, atol=1e-3)
    # the ensemble's own calibration buffer widens the band of the mean (log space: gaps x 2)
    lo, mid, hi = (ens.target_norm(wide, dim=2)[:, :, :, i] for i in range(3))
    lo0, mid0, hi0 = (ens.target_norm(y, dim=2)[:, :, :, i] for i in range(3))
    ok = (wide[:, :, :, 0] > 0) & (y[:, :, :, 0] > 0)  # away from the relu at zero
    torch.testing.assert_close(mid, mid0)
    torch.testing.assert_close((mid - lo)[ok], 2 * (mid0 - lo0)[ok], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(hi - mid, 2 * (hi0 - mid0), rtol=1e-3, atol=1e-3)


def test_station_forward_gives_each_member_and_matches_the_grid():
    from training.module import at_stations, check_station_forward, station_forward

    ens = _ensemble(2)
    _randomise(ens, 2)
    x = _inputs(ens.cfg)
    row, col = torch.tensor([[1, 4, 7], [0, 5, 8]]), torch.tensor([[2, 3, 9], [1, 6, 0]])
    with torch.no_grad():
        each = station_forward(ens, *x, row, col, members=True)
        grids = ens.forward_members(*x)
    assert each.shape == (2, 2, ens.cfg.leads, 2, 3, 3)
    for m in range(2):
        torch.testing.assert_close(each[m], at_stations(grids[m], row, col), rtol=1e-5, atol=1e-4)
    batch = dict(zip(("obs", "obs_mask", "forcing", "forcing_mask", "static"), x, strict=True))
    assert check_station_forward(ens, batch | {"station_row": row, "station_col": col}) < 1e-3


def _pair_module(store: Path):
    """AQModule of configs/tiny.yaml with two members on the tiny store."""
    from training.config import load_config
    from training.datamodule import AQDataModule
    from training.module import AQModule

    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["model.members=2"])
    dm = AQDataModule(cfg, store)
    dm.setup("fit")
    return AQModule(cfg, dm.channels, json.loads(dm.ds.attrs["norm_stats"]))


def test_each_member_is_clipped_on_its_own(tiny_store_path: Path):
    """Per-member clipping: a member with a huge gradient does not shrink the other's."""
    mod = _pair_module(tiny_store_path)
    big, small = (list(m.parameters()) for m in mod.net.members)
    for p in big:
        p.grad = torch.full_like(p, 10.0)
    for p in small:
        p.grad = torch.full_like(p, 1e-4)
    before = [p.grad.clone() for p in small]
    mod.configure_gradient_clipping(None, gradient_clip_val=1.0)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in big]))
    assert abs(float(norm) - 1.0) < 1e-4
    assert all(torch.equal(p.grad, b) for p, b in zip(small, before, strict=True))


def train_tiny(store: Path, home: Path, monkeypatch, *overrides: str) -> tuple[torch.nn.Module, dict]:
    """One epoch of `configs/tiny.yaml` + overrides on the tiny store, registered in a tracking store under
    `home`, reloaded from the registry -> (model, metadata)."""
    from training.config import load_config
    from training.tracking import load_model
    from training.train import run_training

    monkeypatch.setenv("AQCAST_HOME", str(home))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    cfg = load_config(ROOT / "configs" / "tiny.yaml", ["optim.max_epochs=1", "tracking.log_plots=false",
                                                       *overrides])
    run = run_training(cfg, store=str(store), run_name="tiny", echo=lambda s: None)
    return load_model(run["uri"])


def test_an_ensemble_trains_registers_and_exports(tiny_store_path: Path, tmp_path: Path, monkeypatch):
    """Train two members on the tiny store, register, reload from the registry, export to ONNX with parity."""
    from training.export import export_artifact

    net, meta = train_tiny(tiny_store_path, tmp_path / "home", monkeypatch, "model.members=2")
    assert isinstance(net, AQEnsemble) and meta["model_config"]["members"] == 2
    assert all(torch.all(m.gap_scale == 1.0) for m in net.members)  # members stay raw
    a, b = (m.head.weight for m in net.members)
    assert not torch.allclose(a, b)
    out = export_artifact(net, meta, tmp_path / "art")
    assert out.ensemble_members == 2
    assert out.parity is not None and out.parity.max_abs_diff_random < 1e-2 and out.parity.n_random > 0
    assert json.loads((tmp_path / "art" / "model_card.json").read_text())["ensemble_members"] == 2


def test_calibration_fits_the_ensembles_band_not_a_members():
    from test_calibrate import FORC as C_FORC
    from test_calibrate import OBS as C_OBS
    from test_calibrate import SMALL as C_SMALL
    from test_calibrate import STATS as C_STATS
    from test_calibrate import _batches

    from training.calibrate import calibrate

    torch.manual_seed(0)
    ens = build_model({**C_SMALL, "members": 2}, {"obs": C_OBS, "forcing": C_FORC, "static": []}, C_STATS).eval()
    batches = _batches(ens.cfg)
    out = calibrate(ens, batches)
    torch.testing.assert_close(ens.gap_scale, torch.as_tensor(out["scales"], dtype=torch.float32))
    assert out["scales"].max() > 1.0  # the untrained band was too narrow for these targets
    assert all(torch.all(m.gap_scale == 1.0) for m in ens.members)
    cal = np.array(out["report"]["coverage_calibrated_in_sample"])
    assert np.all(np.abs(cal - 0.8) < 0.12)


def test_a_member_with_a_non_finite_gradient_sits_the_step_out(tiny_store_path: Path):
    """An overflowing forecast gives one member NaN gradients: that member's update is skipped and counted,
    the other's gradient is clipped as usual (the bj-base-s1 divergence, M31)."""
    mod = _pair_module(tiny_store_path)
    bad, good = (list(m.parameters()) for m in mod.net.members)
    for p in bad:
        p.grad = torch.full_like(p, 0.5)
    bad[0].grad.view(-1)[0] = float("nan")
    for p in good:
        p.grad = torch.full_like(p, 10.0)
    mod.configure_gradient_clipping(None, gradient_clip_val=1.0)
    assert mod.skipped_updates == 1 and all((p.grad == 0).all() for p in bad)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in good]))
    assert abs(float(norm) - 1.0) < 1e-4


def test_an_overflowing_forecast_stays_finite():
    """A decoder far outside its training range gives a huge forecast, capped at 1e5 ug m-3, never inf."""
    net = AQNet(ModelConfig(**SMALL), CH, STATS)
    x = _inputs(ModelConfig(**SMALL))
    with torch.no_grad():
        net.head.bias.fill_(500.0)
        y = net(*x)
    assert torch.isfinite(y).all() and float(y.max()) <= 1.0001e5 and float(y.max()) > 1e4
