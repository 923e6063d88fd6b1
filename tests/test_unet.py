"""The U-Net encoder option (`model.encoder: unet`): shapes on odd grids, identity at init, a receptive-field
bound that holds, the forecast contract, and ONNX parity with its resampling paths switched on."""
from __future__ import annotations

import pytest
import torch

from models.config import ModelConfig
from models.unet import PHASE, UNetEncoder
from tests.test_models import SMALL, _inputs, _model

SMALL_UNET = {**SMALL, "unet_blocks": 1}

torch.set_num_threads(1)


def _randomised(module: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Every weight redrawn (the zero-initialised merges and residual branches too): all paths carry signal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


@pytest.mark.parametrize("shape", [(31, 26), (7, 5), (1, 3), (4, 4)])
def test_shape_any_grid_and_identity_at_init(shape):
    enc = UNetEncoder(8)
    x = torch.randn(2, 8, *shape)
    assert torch.equal(enc(x), x)  # zero-initialised: starts as the identity, like the dilated stack
    y = _randomised(enc)(x)
    assert y.shape == x.shape and not torch.equal(y, x)


@pytest.mark.parametrize("blocks", [1, 2])
def test_receptive_field_bound(blocks):
    enc = _randomised(UNetEncoder(4, blocks)).eval()
    x = torch.randn(1, 4, 140, 140)
    x2 = x.clone()
    x2[0, :, 70, 70] += 5.0
    with torch.no_grad():
        changed = (enc(x2) - enc(x)).abs().sum(1)[0] > 0
    reach = int((torch.nonzero(changed) - 70).abs().max())
    bound = UNetEncoder.receptive_field_cells(blocks)
    assert 8 * blocks < reach <= bound  # reaches far (the coarse levels) but never past the declared halo


def test_tiles_exact_at_multiples_of_phase():
    """A window that starts at a multiple of PHASE and reaches the halo past a tile reproduces the full grid's
    state inside the tile; shifted by 2 cells it does not (why the halo is rounded up to PHASE)."""
    enc = _randomised(UNetEncoder(4, 1), seed=3).eval()
    x = torch.randn(1, 4, 120, 120)
    halo = UNetEncoder.receptive_field_cells(1)
    with torch.no_grad():
        full = enc(x)
        for start, exact in ((8, True), (10, False)):
            win = enc(x[..., start:start + 2 * halo + 16, :])
            got, want = win[..., halo:halo + 16, :], full[..., start + halo:start + halo + 16, :]
            assert torch.allclose(got, want, atol=1e-5) == exact
    assert ModelConfig(encoder="unet").receptive_field_cells() % PHASE == 0


def test_forecast_contract_and_gradients():
    model, cfg = _model(encoder="unet", unet_blocks=1)
    assert isinstance(model.blocks, UNetEncoder)
    _randomised(model.blocks, seed=1, std=0.1)
    x = _inputs(cfg, ny=9, nx=13)
    y = model(*x)
    assert y.shape == (2, cfg.leads, 2, 3, 9, 13)
    assert torch.isfinite(y).all() and (y >= 0).all() and (y[:, :, :, 0] <= y[:, :, :, 2]).all()
    y[:, :, :, 1].mean().backward()
    assert model.blocks.mid[0].c1.weight.grad.abs().sum() > 0  # the quarter-resolution level is trained
    assert cfg.receptive_field_cells() > ModelConfig(**{k: v for k, v in cfg.model_dump().items()
                                                        if k != "encoder"}).receptive_field_cells()


def test_config_rejects_unknown_encoder():
    with pytest.raises(ValueError, match="encoder"):
        ModelConfig(encoder="convlstm")
    with pytest.raises(ValueError):
        ModelConfig(encoder="unet", unet_blocks=0)


def test_mixed_ensemble_one_encoder_per_member():
    from models.ensemble import AQEnsemble

    model, cfg = _model(members=2, member_encoders=["dilated", "unet"], unet_blocks=1)
    assert isinstance(model, AQEnsemble)
    assert [type(m.blocks).__name__ for m in model.members] == ["Sequential", "UNetEncoder"]
    assert [m.cfg.encoder for m in model.members] == ["dilated", "unet"]
    _randomised(model.members[1].blocks, seed=4, std=0.1)
    x = _inputs(cfg, ny=9, nx=13)
    with torch.no_grad():
        y = model(*x)
        z, base = model.state(*x)
        members = model.decode_members(z, model.future_features(x[2], x[3]), base)
    assert y.shape == (2, cfg.leads, 2, 3, 9, 13) and members.shape[0] == 2
    assert not torch.allclose(members[0], members[1])
    assert cfg.receptive_field_cells() == ModelConfig(**{**SMALL_UNET, "encoder": "unet"}).receptive_field_cells()
    for bad in ({"members": 2, "member_encoders": ["unet"]}, {"members": 1, "member_encoders": ["unet"]}):
        with pytest.raises(ValueError, match="member_encoders"):
            ModelConfig(**bad)


def test_onnx_parity(tmp_path, tiny_store):
    pytest.importorskip("onnxruntime")
    from training.bench import model_for_store
    from training.export import export_artifact

    model, meta = model_for_store(tiny_store, {"hidden": 8, "decoder_hidden": 8, "encoder": "unet",
                                               "spread_sigmas": [1.5, 3.0]})
    _randomised(model.blocks, seed=2, std=0.1)
    card = export_artifact(model, meta, tmp_path / "art")  # raises past tolerance, at two grid sizes
    assert card.parity.max_abs_diff_random < 1e-2 and card.dynamic_spatial
    assert card.receptive_field_cells >= UNetEncoder.receptive_field_cells()
    assert card.architecture["encoder"] == "unet"  # the artifact says which network it holds
