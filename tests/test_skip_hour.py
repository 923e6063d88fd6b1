"""model.skip_hour: the persistence skip's weight per lead also follows the valid local hour (thirty-fourth round)."""

import pytest
import torch
from test_models import FORC, OBS, STATIC, STATS, _inputs, _model

from models import build_model
from models.config import ModelConfig


def test_skip_hour_starts_as_the_per_lead_skip_then_moves_it_by_hour():
    plain, cfg = _model(forcing_windows=[3])
    hourly, _ = _model(forcing_windows=[3], skip_hour=True)  # built last and zero-initialised
    x = _inputs(cfg)
    with torch.no_grad():
        torch.testing.assert_close(hourly(*x), plain(*x))
        hourly.skip_hour_coef[:, :, 1] = 0.3  # + 0.3 cos(2 pi hour / 24) on every lead's weight
        fut = hourly.future_features(x[2], x[3])  # the same weights but the new one: the same z, fut and base
        z, base = hourly.state(*x)
        p50, _, _ = hourly.raw_parts(z, fut, base)
        plain_p50, _, _ = plain.raw_parts(z, fut, base)
        cos = hourly.hour_basis(fut)[:, :, 1]  # [B, L, Y, X]
        want = plain_p50 + 0.3 * cos.unsqueeze(2) * base[:, :2].unsqueeze(1)
        torch.testing.assert_close(p50, want, atol=1e-5, rtol=1e-5)
        assert (p50 - plain_p50).abs().max() > 0.01
        y = hourly(*x)
    assert (y >= 0).all() and (y[:, :, :, 0] <= y[:, :, :, 1]).all() and (y[:, :, :, 1] <= y[:, :, :, 2]).all()


def test_skip_hour_needs_the_hour_forcings():
    cfg = ModelConfig(history=6, leads=5, hidden=8, decoder_hidden=8, dilations=[1], skip_hour=True)
    no_hour = [f for f in FORC if not f.startswith("hour_")]
    with pytest.raises(ValueError, match="skip_hour needs the hour_sin and hour_cos"):
        build_model(cfg, {"obs": OBS, "forcing": no_hour, "static": STATIC}, STATS)
