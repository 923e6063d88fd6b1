"""`model.aux_targets`: other pollutants as training-only targets (multi-task) beside PM2.5 and O3.

They come from the horizon's station values (never inputs), enter the loss masked like the targets, and leave
the forecast, the registered model and the ONNX graph's outputs unchanged."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_module

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


def test_sampler_gives_the_horizons_station_values_as_aux_targets(tiny_store_path: Path):
    from features.store import open_store
    from features.windows import WindowSampler, valid_init_times

    ds = open_store(tiny_store_path)
    inits = valid_init_times(ds, every_h=24, history=6, leads=8)[:3]
    plain = WindowSampler(ds, inits, history=6, leads=8)
    aux = WindowSampler(ds, inits, history=6, leads=8, aux_targets=["pm10", "co"])
    assert "aux_target" not in plain[0]
    item = aux[1]
    t = int(np.searchsorted(ds["time"].values, inits[1]))
    want = np.stack([ds["stn_pm10"].transpose("time", "station").values[t + 1:t + 9],
                     ds["stn_co"].transpose("time", "station").values[t + 1:t + 9]], axis=1)
    ok = np.isfinite(want)
    if "qc_pm10" in ds:
        ok[:, 0] &= ds["qc_pm10"].transpose("time", "station").values[t + 1:t + 9] == 0
        ok[:, 1] &= ds["qc_co"].transpose("time", "station").values[t + 1:t + 9] == 0
    assert item["aux_target"].shape == (8, 2, ds.sizes["station"])
    np.testing.assert_array_equal(item["aux_mask"], ok.astype(np.float32))
    np.testing.assert_allclose(item["aux_target"][ok], want[ok])
    for k in ("obs", "forcing", "target"):  # the inputs and the forecast's targets are the same
        np.testing.assert_array_equal(item[k], plain[1][k])


def test_aux_loss_is_masked_weighted_and_reaches_only_its_head(tiny_store_path: Path):
    mod, dm = tiny_module(tiny_store_path, "model.aux_targets=[pm10,no2]", "optim.aux_weight=0.5")
    batch = next(iter(dm.train_dataloader()))
    assert batch["aux_target"].shape[2] == 2 and batch["aux_mask"].sum() > 0
    with torch.no_grad():
        full = mod.member_losses(batch)
        main = mod.member_losses({k: v for k, v in batch.items() if not k.startswith("aux_")})
        junk = dict(batch, aux_target=torch.where(batch["aux_mask"] > 0.5, batch["aux_target"],
                                                  torch.full_like(batch["aux_target"], 1e6)))
        torch.testing.assert_close(mod.member_losses(junk), full)  # unobserved entries count for nothing
    assert (full > main + 1e-4).all()
    mod.zero_grad()
    (full := mod.member_losses(batch)).sum().backward()
    assert mod.net.aux_head.weight.grad.abs().sum() > 0
    none, _ = tiny_module(tiny_store_path, "model.aux_targets=[pm10,no2]", "optim.aux_weight=0")
    none.load_state_dict(mod.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(none.member_losses(batch), main)


def test_aux_targets_validate():
    from models.config import ModelConfig

    with pytest.raises(ValueError, match="aux_targets"):
        ModelConfig(aux_targets=["pm25"])  # a forecast species, not an auxiliary one
    with pytest.raises(ValueError, match="aux_targets"):
        ModelConfig(aux_targets=["co", "co"])


def test_a_model_with_aux_heads_trains_exports_and_forecasts_the_two_species(tiny_store_path: Path,
                                                                             tmp_path: Path, monkeypatch):
    from training.config import load_config
    from training.export import export_artifact
    from training.tracking import load_model
    from training.train import run_training

    monkeypatch.setenv("AQCAST_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    cfg = load_config(TINY, ["optim.max_epochs=1", "tracking.log_plots=false", "model.members=2",
                             "model.aux_targets=[co]", "model.decoder_film=true"])
    run = run_training(cfg, store=str(tiny_store_path), run_name="tiny-aux", echo=lambda s: None)
    net, meta = load_model(run["uri"])
    assert meta["model_config"]["aux_targets"] == ["co"]
    assert all(m.aux_head.weight.abs().sum() > 0 for m in net.members)
    out = export_artifact(net, meta, tmp_path / "art")
    assert out.parity is not None and out.parity.max_abs_diff_random < 1e-2
    assert out.parity.max_abs_diff_real is None or out.parity.max_abs_diff_real < 1e-2


def test_dropped_weight_weighs_only_the_stations_dropped_from_the_inputs(tiny_store_path: Path):
    mod, dm = tiny_module(tiny_store_path, "data.drop_prob=0.5", "optim.dropped_weight=3")
    plain, _ = tiny_module(tiny_store_path, "data.drop_prob=0.5")
    plain.load_state_dict(mod.state_dict())
    batch = next(iter(dm.train_dataloader()))
    dropped = batch["station_in_input"] < 0.5
    assert dropped.any() and (~dropped).any()
    with torch.no_grad():
        assert not torch.allclose(mod.member_losses(batch), plain.member_losses(batch))
        none = dict(batch, station_in_input=torch.ones_like(batch["station_in_input"]))
        torch.testing.assert_close(mod.member_losses(none), plain.member_losses(none))
        w = 1.0 + 2.0 * dropped.float()
        q = plain.station_quantiles(batch)
        torch.testing.assert_close(mod.member_losses(batch)[0], plain._loss(q, batch, batch["target_mask"], w))


def test_level_power_reaches_the_training_and_validation_loss(tiny_store_path: Path):
    from models.losses import level_weights

    mod, dm = tiny_module(tiny_store_path, "optim.level_power=0.5")
    plain, _ = tiny_module(tiny_store_path)
    plain.load_state_dict(mod.state_dict())
    batch = next(iter(dm.train_dataloader()))
    with torch.no_grad():
        q = plain.station_quantiles(batch)
        keep = (batch["target_mask"] > 0.5).unsqueeze(3)
        lw = level_weights(q, keep, 1, 0.5)
        assert lw[keep].std() > 0.1  # the tiny world's levels differ: the weights are not all 1
        assert not torch.allclose(mod.member_losses(batch), plain.member_losses(batch))
        t = torch.log1p(torch.nan_to_num(batch["target"]).clamp(min=0)).unsqueeze(3)
        err = t - torch.log1p(q.clamp(min=0))
        qs = torch.tensor([0.1, 0.5, 0.9]).reshape(1, 1, 1, 3, 1)
        pin = torch.maximum(qs * err, (qs - 1) * err) * keep * lw
        expected = pin.sum() / (keep * lw).expand_as(pin).sum()
        torch.testing.assert_close(mod.member_losses(batch)[0], expected)
        torch.testing.assert_close(mod._loss(q, batch, batch["target_mask"]), expected)  # validation_step's loss
