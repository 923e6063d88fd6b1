"""model.skip_observed: cells that observed a species at the init hour get their own skip weight and decoder
gain (thirty-fifth round)."""

import torch
from test_models import _inputs, _model


def test_skip_observed_starts_as_the_shared_skip_then_moves_only_observed_cells():
    plain, cfg = _model(forcing_windows=[3], persistence_exact=True)
    own, _ = _model(forcing_windows=[3], persistence_exact=True, skip_observed=True)  # built last, zeros
    x = _inputs(cfg)
    with torch.no_grad():
        torch.testing.assert_close(own(*x), plain(*x))
        own.alpha_own[:, 0] = 0.3  # PM2.5's weight + 0.3 where observed
        own.gain_own[:, 1] = -0.5  # O3's decoder term halved where observed
        z, base = own.state(*x)
        fut = own.future_features(x[2], x[3])
        p50, _, _ = own.raw_parts(z, fut, base)
        plain_p50, _, _ = plain.raw_parts(z, fut, base)
        observed = x[1][:, -1, [own.species_idx[0], own.species_idx[1]]] > 0.5  # [B, 2, Y, X] at the init hour
        assert observed.any() and (~observed).any()
        torch.testing.assert_close(base[:, -2:], observed.float())
        obs_p = observed.unsqueeze(1).expand_as(p50)
        torch.testing.assert_close(p50[~obs_p], plain_p50[~obs_p])  # unobserved cells: unchanged
        head = (plain_p50 - plain.alpha.reshape(1, cfg.leads, 2, 1, 1) * base[:, :2].unsqueeze(1))
        want = plain_p50.clone()
        want[:, :, 0] += 0.3 * base[:, 0].unsqueeze(1)
        want[:, :, 1] -= 0.5 * head[:, :, 1]
        torch.testing.assert_close(p50[obs_p], want[obs_p], atol=1e-5, rtol=1e-5)
        assert (p50 - plain_p50).abs().max() > 0.01
        y = own(*x)
    assert (y >= 0).all() and (y[:, :, :, 0] <= y[:, :, :, 1]).all() and (y[:, :, :, 1] <= y[:, :, :, 2]).all()


def test_skip_observed_with_diurnal_inputs_keeps_the_same_hour_channels():
    plain, cfg = _model(history=24, diurnal_inputs=True)
    own, _ = _model(history=24, diurnal_inputs=True, skip_observed=True)
    x = _inputs(cfg)
    with torch.no_grad():
        _, base = own.state(*x)
        _, plain_base = plain.state(*x)
        torch.testing.assert_close(own.same_hour(base), plain.same_hour(plain_base))
        torch.testing.assert_close(own(*x), plain(*x))
