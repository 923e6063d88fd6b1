"""P10/P90 calibration: scales that reach the nominal coverage, carried by the model, held-out stations unused."""
import numpy as np
import torch

from models import build_model
from models.config import ModelConfig
from training.calibrate import calibrate, coverage, fit_scales

torch.set_num_threads(1)

OBS = ["obs_pm25", "obs_o3"]
FORC = ["met_t2m", "hour_sin"]
STATS = {"obs_pm25": {"mean": 80.0, "std": 80.0, "mean_log1p": 3.9, "std_log1p": 1.0},
         "obs_o3": {"mean": 57.0, "std": 55.0, "mean_log1p": 3.4, "std_log1p": 1.3}}
SMALL = {"history": 4, "leads": 6, "hidden": 8, "decoder_hidden": 8, "dilations": [1], "spread_sigmas": [1.0],
         "spread_recent": 2, "spread_stride": 2, "history_forcing_stride": 2}


def _ratios(n=4000, leads=6, spread=2.0, seed=0):
    """Band [-1, 1] around P50 = 0 (unit gaps); observations ~ N(0, spread): too narrow a band."""
    g = np.random.default_rng(seed)
    t = g.normal(0, spread, size=(n, leads, 2, 1))
    return {"r_lo": -t, "r_hi": t, "valid": np.ones_like(t, bool), "month": g.integers(0, 12, n)}


def test_fit_scales_reach_nominal_coverage():
    r = _ratios()
    assert np.all(coverage(r, np.ones((6, 2, 2))) < 0.45)  # N(0, 2) inside +-1: 38 %
    s = fit_scales(r)
    np.testing.assert_allclose(s, 1.2816 * 2.0, rtol=0.06)
    cov = coverage(r, s)
    assert np.all((cov > 0.78) & (cov < 0.82))
    fresh = _ratios(seed=1)  # out of sample, same distribution
    assert np.all(np.abs(coverage(fresh, s) - 0.8) < 0.03)


def test_fit_scales_ignore_unobserved_and_bound():
    r = _ratios()
    r["r_lo"][:, :, :, 0][:2000] = 1e6  # garbage where nothing was observed
    r["valid"][:2000] = False
    s = fit_scales(r)
    np.testing.assert_allclose(s, 1.2816 * 2.0, rtol=0.08)
    wild = _ratios(spread=100.0)
    assert fit_scales(wild).max() == 4.0


def _batches(model_cfg, n_batches=6, b=8, ny=6, nx=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, n_l = model_cfg.history, model_cfg.leads
    out = []
    for i in range(n_batches):
        obs = torch.rand(b, h, 2, ny, nx, generator=g) * 100
        om = (torch.rand(b, h, 2, ny, nx, generator=g) < 0.3).float()
        target = torch.rand(b, n_l, 2, 3, generator=g) * 150  # wide spread: an untrained band misses it
        init = np.datetime64("2015-01-01T00", "ns") + np.arange(b) * np.timedelta64(40 * (i + 1), "D")
        out.append({"obs": obs * om, "obs_mask": om, "forcing": torch.randn(b, h + n_l, 2, ny, nx, generator=g),
                    "forcing_mask": torch.ones(b, h + n_l, 2, ny, nx), "static": torch.zeros(b, 0, ny, nx),
                    "station_row": torch.tensor([[1, 3, 5]] * b), "station_col": torch.tensor([[2, 4, 6]] * b),
                    "target": target, "target_mask": torch.ones(b, n_l, 2, 3),
                    "station_in_input": torch.tensor([[1.0, 1.0, 0.0]] * b),
                    "init_time": torch.as_tensor(init.astype(np.int64))})
    return out


def test_calibrate_sets_the_models_band_from_input_stations_only():
    cfg = ModelConfig(**SMALL)
    torch.manual_seed(0)
    net = build_model(cfg, {"obs": OBS, "forcing": FORC, "static": []}, STATS).eval()
    batches = _batches(cfg)
    out = calibrate(net, batches)
    assert out["scales"].shape == (6, 2, 2)
    torch.testing.assert_close(net.gap_scale, torch.as_tensor(out["scales"], dtype=torch.float32))
    assert out["scales"].max() > 1.0  # the untrained band was too narrow for these targets
    cal = np.array(out["report"]["coverage_calibrated_in_sample"])
    assert np.all(np.abs(cal - 0.8) < 0.12)  # 6 x 8 x 2 samples per lead: coarse
    assert np.nanmax(np.array(out["report"]["coverage_uncalibrated"])) < np.nanmin(cal)
    # the station the loss never sees (in_input = 0) is not used: changing its targets changes nothing
    for b in batches:
        b["target"][:, :, :, 2] = 1e4
    again = calibrate(net, batches)
    np.testing.assert_allclose(again["scales"], out["scales"])
    # the full-grid forward carries the scales: the band widens, P50 stays
    x = [batches[0][k] for k in ("obs", "obs_mask", "forcing", "forcing_mask", "static")]
    with torch.no_grad():
        wide = net(*x)
        net.gap_scale.fill_(1.0)
        narrow = net(*x)
    torch.testing.assert_close(wide[:, :, :, 1], narrow[:, :, :, 1])
    assert (wide[:, :, :, 2] - wide[:, :, :, 0]).sum() > (narrow[:, :, :, 2] - narrow[:, :, :, 0]).sum()


def test_old_weights_without_gap_scale_load_uncalibrated():
    cfg = ModelConfig(**SMALL)
    net = build_model(cfg, {"obs": OBS, "forcing": FORC, "static": []}, STATS)
    state = {k: v for k, v in net.state_dict().items() if k != "gap_scale"}
    net.gap_scale.fill_(3.0)
    net.load_state_dict(state)
    assert torch.equal(net.gap_scale, torch.ones_like(net.gap_scale))
