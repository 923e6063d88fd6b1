"""`optim.precision`: bfloat16 autocast of the training steps' learned layers, float32 everywhere else."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_module

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


def test_auto_picks_bf16_only_where_the_cpu_has_it(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    from training import precision

    assert precision.resolve("32") == "32"
    for native in (False, True):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda n=native: n, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
        assert precision.native_bf16() is native
        assert precision.resolve("auto") == ("bf16-mixed" if native else "32")
        caplog.clear()
        assert precision.resolve("bf16-mixed") == "bf16-mixed"  # asked for explicitly: kept, warned if emulated
        assert ("emulated" in caplog.text) is not native
    with pytest.raises(ValueError, match="optim.precision"):
        precision.resolve("fp16")


def test_config_rejects_an_unknown_precision():
    from features.errors import DataError
    from training.config import load_config

    assert load_config(TINY, ["optim.precision=auto"]).optim.precision == "auto"
    with pytest.raises(DataError, match="precision"):
        load_config(TINY, ["optim.precision=fp16"])


def test_station_spreading_stays_float32_under_autocast():
    from models.spread import NormalizedConv

    g = torch.Generator().manual_seed(0)
    value = torch.randn(4, 31, 26, generator=g)
    mask = (torch.rand(4, 31, 26, generator=g) < 0.02).float()
    spread = NormalizedConv((1.5, 4.0, 10.0))
    ref = spread(value, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = spread(value, mask)
        assert torch.bmm(value[:1], value[:1].transpose(1, 2)).dtype == torch.bfloat16  # autocast is on here
    for a, b in zip(got, ref, strict=True):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("members", [1, 2])
def test_bf16_step_trains_float32_weights_on_a_close_loss(tiny_store_path: Path, members: int):
    m32, dm = tiny_module(tiny_store_path, f"model.members={members}")
    m16, _ = tiny_module(tiny_store_path, f"model.members={members}", "optim.precision=bf16-mixed")
    m16.load_state_dict(m32.state_dict())
    batch = next(iter(dm.train_dataloader()))
    l32 = m32.member_losses(batch)
    l16 = m16.member_losses(batch)
    assert l16.dtype == torch.float32 and l16.shape == (members,)
    assert not torch.equal(l16, l32)  # the learned layers did run in bfloat16
    torch.testing.assert_close(l16, l32, rtol=0.02, atol=0)
    l16.sum().backward()
    grads = [p.grad for p in m16.parameters() if p.requires_grad]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    before = [p.detach().clone() for p in m16.parameters()]
    torch.optim.AdamW(m16.parameters(), 1e-3).step()
    assert all(p.dtype == torch.float32 for p in m16.parameters())
    assert any(not torch.equal(p, b) for p, b in zip(m16.parameters(), before, strict=True))
    with torch.no_grad():  # outside the training step the model is float32 again
        assert m16(*(batch[k][:1] for k in ("obs", "obs_mask", "forcing", "forcing_mask", "static"))).dtype \
            == torch.float32
