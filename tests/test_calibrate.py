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
    assert np.all(coverage(r, np.ones((6, 2, 2, 2))) < 0.45)  # N(0, 2) inside +-1: 38 %
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
    assert out["scales"].shape == (6, 2, 2, 2)
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


def test_each_cell_class_gets_its_own_band():
    """Cells that observed the species at init (w = 1, errors ~N(0, 1)) and cells far from any observation
    (w = 0, ~N(0, 3)) each reach 80 %, and so do cells in between (w = 0.5, the blend of the two scales);
    one shared scale would cover > 90 % of the first and < 65 % of the second."""
    g = np.random.default_rng(0)
    n = 9000
    w = np.broadcast_to(g.choice([1.0, 0.0, 0.5], n)[:, None, None, None], (n, 6, 2, 1))
    t = g.normal(0, 1.0 + 2.0 * (1 - w))
    r = {"r_lo": -t, "r_hi": t, "valid": np.ones_like(t, bool), "w": w, "month": g.integers(0, 12, n)}
    s = fit_scales(r)
    np.testing.assert_allclose(s[..., 0], 1.2816, rtol=0.08)
    np.testing.assert_allclose(s[..., 1], 1.2816 * 3, rtol=0.08)
    for cls in (0, 1):
        assert np.all(np.abs(coverage(r, s, cls=cls) - 0.8) < 0.03)
    half = {**r, "valid": r["valid"] & (w == 0.5)}
    assert np.all(np.abs(coverage(half, s) - 0.8) < 0.04)
    shared = fit_scales({**r, "w": np.ones_like(w)})
    far = {**r, "valid": r["valid"] & (w == 0)}
    assert coverage(r, shared, cls=0).min() > 0.9 and coverage(far, shared).max() < 0.65


def test_the_net_blends_the_classes_by_its_station_weight():
    """In the full-grid forward the gaps scale by s_u + w (s_o - s_u): widening the observed class widens
    exactly the cells with a positive station weight, fully at cells that observed the species at init."""
    cfg = ModelConfig(**SMALL)
    torch.manual_seed(0)
    net = build_model(cfg, {"obs": OBS, "forcing": FORC, "static": []}, STATS).eval()
    b = _batches(cfg, n_batches=1, b=2)[0]
    x = [b[k] for k in ("obs", "obs_mask", "forcing", "forcing_mask", "static")]
    w = net.station_weight(b["obs_mask"])  # [B, 2, Y, X]
    seen = b["obs_mask"][:, -1] > 0.5  # OBS = (pm25, o3): the two species
    assert torch.all(w[seen] == 1.0) and torch.all((w >= 0) & (w <= 1)) and (w[~seen] < 1).any()
    base = net.state(*x)[1]
    torch.testing.assert_close(base[:, 2:4], w)  # the forward's own weight is the same
    torch.testing.assert_close(base[:, 4:], seen.float())  # and last, whether the cell observed it at init
    with torch.no_grad():
        net.gap_scale.fill_(1.0)
        one = net(*x)
        net.gap_scale[..., 0] = 2.0  # widen the observed class only
        two = net(*x)
    g1 = torch.log1p(one[:, :, :, 2]) - torch.log1p(one[:, :, :, 1])  # upper gap, log space (~ scale x gap)
    g2 = torch.log1p(two[:, :, :, 2]) - torch.log1p(two[:, :, :, 1])
    wider = (g2 > g1 + 1e-5).any(1)  # [B, 2, Y, X]
    assert torch.equal(wider, w > 1e-3)


def test_old_weights_without_gap_scale_load_uncalibrated():
    cfg = ModelConfig(**SMALL)
    net = build_model(cfg, {"obs": OBS, "forcing": FORC, "static": []}, STATS)
    state = {k: v for k, v in net.state_dict().items() if k != "gap_scale"}
    net.gap_scale.fill_(3.0)
    net.load_state_dict(state)
    assert torch.equal(net.gap_scale, torch.ones_like(net.gap_scale))
    one_class = torch.rand(6, 2, 2)  # saved before the two cell classes: both take it
    net.load_state_dict({**state, "gap_scale": one_class})
    assert torch.equal(net.gap_scale[..., 0], one_class) and torch.equal(net.gap_scale[..., 1], one_class)


def test_calibration_sees_every_issue_hour_not_only_the_val_loaders(tiny_store_path):
    """`data.calib_every_h` gives the calibration inits at each hour of day forecasts are issued at (a lead's
    coverage depends on the hour it is valid at), while validation keeps its cheaper spacing."""
    from pathlib import Path

    from training.config import load_config
    from training.datamodule import AQDataModule

    tiny = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
    hours = {}
    for every in (None, 6):
        extra = [] if every is None else [f"data.calib_every_h={every}"]
        dm = AQDataModule(load_config(tiny, extra), tiny_store_path)
        dm.setup()
        init = np.concatenate([b["init_time"].numpy() for b in dm.calib_dataloader()]).astype("datetime64[ns]")
        hours[every] = sorted({int(h) for h in init.astype("datetime64[h]").astype(np.int64) % 24})
        assert len(dm.val_dataloader().dataset) == len(dm.val_ds)
        # input stations are dropped from some calibration windows (both cell classes), never from validation
        cal = next(iter(dm.calib_dataloader()))
        held = cal["station_withheld"] > 0.5
        assert ((cal["station_in_input"] < 0.5) & ~held).any()
        val = next(iter(dm.val_dataloader()))
        assert torch.equal(val["station_in_input"] > 0.5, val["station_withheld"] < 0.5)
    assert len(hours[None]) == 1 and hours[6] == sorted((hours[None][0] + k) % 24 for k in (0, 6, 12, 18))


def test_scorecard_says_when_its_coverage_is_in_sample():
    from training.evaluate import _calibration_note, parse_time

    meta = {"quantile_calibration": {"method": "x"},
            "validation_window": ["2015-02-28T16:00:00+00:00", "2016-02-29T15:00:00+00:00"]}
    t = lambda s: parse_time(s, "t")[0]
    inside_year = _calibration_note(meta, t("2015-06-01T00:00+08:00"), t("2015-07-01T00:00+08:00"))
    next_year = _calibration_note(meta, t("2016-03-01T00:00+08:00"), t("2017-02-25T00:00+08:00"))
    assert "in-sample" in inside_year[0] and "out of sample" in next_year[0]
    assert _calibration_note({**meta, "quantile_calibration": None}, t("2015-06-01T00:00Z"), t("2015-07-01T00:00Z")) == []


def _diurnal_ratios(n=6000, leads=6, seed=0):
    """Observations whose spread doubles from night to afternoon (as O3's does), at inits every 6 h."""
    g = np.random.default_rng(seed)
    init_h = g.choice([0, 6, 12, 18], n)
    vh = (init_h[:, None] + np.arange(1, leads + 1)[None]) % 24  # [N, L]
    a = 2 * np.pi * vh / 24
    basis = np.stack([np.sin(a), np.cos(a), np.sin(2 * a), np.cos(2 * a)], -1)[:, :, None, :]  # [N, L, 1, 4]
    spread = 2.0 * np.exp(0.35 * np.sin(a))[:, :, None, None]
    t = g.normal(0, 1, size=(n, leads, 2, 1)) * spread
    return {"r_lo": -t, "r_hi": t, "valid": np.ones_like(t, bool), "month": g.integers(0, 12, n),
            "hour": init_h, "basis": basis}


def test_diurnal_factor_evens_coverage_across_valid_hours():
    """Lead-only scales cover the quiet hours too much and the busy ones too little; the diurnal factor,
    fitted on one sample, brings every issue hour and lead near 80 % on a fresh one."""
    from training.calibrate import deflated, fit_band, fit_scales, inside

    r, fresh = _diurnal_ratios(), _diurnal_ratios(seed=1)
    lead_only = fit_scales(r)
    scales, coef = fit_band(r)
    assert np.abs(coef).max() > 0.2
    for h in (0, 6, 12, 18):
        sel = fresh["hour"] == h
        plain = coverage(fresh, lead_only, sel)
        hit = inside(deflated(fresh, coef), scales)
        both = coverage(fresh, scales, sel, hit=hit)
        assert np.abs(both - 0.8).max() < 0.05
        assert np.abs(plain - 0.8).max() > np.abs(both - 0.8).max()
    assert not fit_band(r, hour=False)[1].any()
    no_basis = {k: v for k, v in r.items() if k != "basis"}
    np.testing.assert_allclose(fit_band(no_basis)[0], lead_only)


def test_model_applies_the_diurnal_factor_of_the_valid_hour():
    """gap_hour scales each lead's gaps by exp(basis . coef) of its valid local hour (from hour_sin/hour_cos);
    the P50 does not move."""
    cfg = ModelConfig(**SMALL)
    torch.manual_seed(0)
    forc = ["met_t2m", "hour_sin", "hour_cos"]
    net = build_model(cfg, {"obs": OBS, "forcing": forc, "static": []}, STATS).eval()
    b = _batches(cfg, n_batches=1)[0]
    hrs = (np.arange(cfg.history + cfg.leads) + 5) % 24
    f = torch.randn(8, cfg.history + cfg.leads, 3, 6, 7)
    f[:, :, 1] = torch.as_tensor(np.sin(2 * np.pi * hrs / 24), dtype=torch.float32)[None, :, None, None]
    f[:, :, 2] = torch.as_tensor(np.cos(2 * np.pi * hrs / 24), dtype=torch.float32)[None, :, None, None]
    x = (b["obs"], b["obs_mask"], f, torch.ones_like(f), b["static"])
    with torch.no_grad():
        p50, lo, hi = net.decode_parts(*_state_and_features(net, x))
        net.gap_hour[1, 1] = torch.tensor([0.3, 0.0, 0.0, 0.1])  # O3, upper side
        p50_b, lo_b, hi_b = net.decode_parts(*_state_and_features(net, x))
    a = 2 * np.pi * hrs[cfg.history:] / 24
    want = torch.as_tensor(np.exp(0.3 * np.sin(a) + 0.1 * np.cos(2 * a)), dtype=torch.float32)
    torch.testing.assert_close(p50_b, p50)
    torch.testing.assert_close(lo_b, lo)
    torch.testing.assert_close(hi_b[:, :, 0], hi[:, :, 0])
    torch.testing.assert_close(hi_b[:, :, 1] / hi[:, :, 1], want[None, :, None, None].expand_as(hi[:, :, 1]),
                               atol=1e-4, rtol=1e-4)
    f[:, :, 1:] = 50.0  # off the unit circle: the basis is clamped, the factor stays within exp(sum |coef|)
    x = (b["obs"], b["obs_mask"], f, torch.ones_like(f), b["static"])
    with torch.no_grad():
        _, _, hi_c = net.decode_parts(*_state_and_features(net, x))
        net.gap_hour.zero_()
        _, _, hi_0 = net.decode_parts(*_state_and_features(net, x))
    assert float((hi_c[:, :, 1] / hi_0[:, :, 1]).max()) <= np.exp(0.4) + 1e-4


def _state_and_features(net, x):
    z, base = net.state(*x)
    return z, net.future_features(x[2], x[3]), base


def _seasonal_ratios(n=8000, leads=4, seed=0):
    """Diurnal ratios whose O3 spread (species 1) is larger in winter than in summer, over a year of inits."""
    r = _diurnal_ratios(n, leads, seed)
    doy = np.random.default_rng(seed + 7).uniform(0, 365, n)
    a = 2 * np.pi * doy / 365.0
    r["season"] = np.broadcast_to(np.stack([np.sin(a), np.cos(a)], -1)[:, None, None, :], (n, leads, 1, 2)).copy()
    r["r_lo"][:, :, 1] *= np.exp(0.4 * np.cos(a))[:, None, None]
    r["r_hi"][:, :, 1] *= np.exp(0.4 * np.cos(a))[:, None, None]
    r["winter"] = np.cos(a) > 0.5
    return r


def test_seasonal_factor_evens_coverage_across_the_year_for_the_species_asked():
    """Fitted for O3 only on one sample, the seasonal factor brings winter and summer near 80 % on a fresh one;
    PM2.5 (no seasonal spread here, not asked) gets no seasonal term."""
    from training.calibrate import deflated, fit_band, inside

    r, fresh = _seasonal_ratios(), _seasonal_ratios(seed=1)
    plain_s, plain_c = fit_band(r)
    scales, coef = fit_band(r, season=(1,))
    assert coef.shape == (2, 2, 6) and not coef[0, :, 4:].any() and coef[1, :, 5].min() > 0.2  # cos term, O3
    for part in (fresh["winter"], ~fresh["winter"]):
        before = coverage(fresh, plain_s, part, hit=inside(deflated(fresh, plain_c), plain_s))[:, 1]
        after = coverage(fresh, scales, part, hit=inside(deflated(fresh, coef), scales))[:, 1]
        assert np.abs(after - 0.8).max() < 0.05 < np.abs(before - 0.8).max()
    no_season = {k: v for k, v in r.items() if k != "season"}
    assert fit_band(no_season, season=(1,))[1].shape == (2, 2, 4)


def test_model_applies_the_seasonal_factor_of_the_valid_day_of_year():
    """gap_season scales the gaps by exp(sin/cos of the valid day of year . coef); P50 and the other species
    do not move; old weights without it load with no factor."""
    cfg = ModelConfig(**SMALL)
    torch.manual_seed(0)
    net = build_model(cfg, {"obs": OBS, "forcing": ["met_t2m", "doy_sin", "doy_cos"], "static": []}, STATS).eval()
    b = _batches(cfg, n_batches=1)[0]
    f = torch.randn(8, cfg.history + cfg.leads, 3, 6, 7)
    f[:, :, 1], f[:, :, 2] = 0.6, -0.8  # a day in winter
    x = (b["obs"], b["obs_mask"], f, torch.ones_like(f), b["static"])
    with torch.no_grad():
        p50, lo, hi = net.decode_parts(*_state_and_features(net, x))
        net.gap_season[1] = torch.tensor([[0.0, -0.5], [0.0, -0.5]])  # O3, both sides: wider when cos < 0
        p50_b, lo_b, hi_b = net.decode_parts(*_state_and_features(net, x))
    torch.testing.assert_close(p50_b, p50)
    torch.testing.assert_close(hi_b[:, :, 0], hi[:, :, 0])
    torch.testing.assert_close(hi_b[:, :, 1] / hi[:, :, 1], torch.full_like(hi[:, :, 1], float(np.exp(0.4))))
    torch.testing.assert_close(lo_b[:, :, 1] / lo[:, :, 1], torch.full_like(lo[:, :, 1], float(np.exp(0.4))))
    for members in (1, 2):  # one network, and an ensemble (its own buffer)
        c = ModelConfig(**SMALL, members=members)
        kind = {"obs": OBS, "forcing": ["met_t2m", "doy_sin", "doy_cos"], "static": []}
        old = {k: v for k, v in build_model(c, kind, STATS).state_dict().items() if "gap_season" not in k}
        fresh = build_model(c, kind, STATS)
        fresh.gap_season.fill_(1.0)
        fresh.load_state_dict(old)
        assert not fresh.gap_season.any()
