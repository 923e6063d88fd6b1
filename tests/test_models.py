"""Deep model: output contract, normalisation buffers, locality, no leakage of future pollutant values."""
import copy
import io

import numpy as np
import pytest
import torch

from models import build_model
from models.config import ModelConfig
from models.normalize import Normalizer

torch.set_num_threads(1)

OBS = ["obs_pm25", "obs_pm10", "obs_no2", "obs_o3"]
FORC = ["met_t2m", "met_sp", "met_u10", "met_v10", "emis_nox", "hour_sin", "hour_cos"]
STATIC = ["static_elevation"]
STATS = {"obs_pm25": {"mean": 80.0, "std": 80.0, "mean_log1p": 3.9, "std_log1p": 1.0},
         "obs_o3": {"mean": 57.0, "std": 55.0, "mean_log1p": 3.4, "std_log1p": 1.3},
         "met_sp": {"mean": 1010.0, "std": 10.0}, "met_t2m": {"mean": 13.0, "std": 11.0},
         "static_elevation": {"mean": 200.0, "std": 300.0}}
SMALL = {"history": 6, "leads": 5, "hidden": 8, "decoder_hidden": 8, "dilations": [1, 2],
         "spread_sigmas": [1.0, 3.0], "spread_recent": 2, "spread_stride": 2, "history_forcing_stride": 2}


def _inputs(cfg: ModelConfig, b=2, ny=10, nx=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, n_l = cfg.history, cfg.leads
    obs = torch.rand(b, h, len(OBS), ny, nx, generator=g) * 150
    obs_mask = (torch.rand(b, h, len(OBS), ny, nx, generator=g) < 0.1).float()
    obs = obs * obs_mask
    forcing = torch.randn(b, h + n_l, len(FORC), ny, nx, generator=g)
    forcing[:, :, 1] += 1010
    forcing_mask = torch.ones_like(forcing)
    static = torch.rand(b, 1, ny, nx, generator=g) * 500
    return obs, obs_mask, forcing, forcing_mask, static


def _model(**kw):
    cfg = ModelConfig(**{**SMALL, **kw})
    torch.manual_seed(0)
    return build_model(cfg, {"obs": OBS, "forcing": FORC, "static": STATIC}, STATS).eval(), cfg


def test_output_shape_monotone_nonnegative():
    model, cfg = _model()
    with torch.no_grad():
        y = model(*_inputs(cfg))
    assert y.shape == (2, cfg.leads, 2, 3, 10, 11)
    assert torch.isfinite(y).all() and (y >= 0).all()
    assert (y[:, :, :, 0] <= y[:, :, :, 1]).all() and (y[:, :, :, 1] <= y[:, :, :, 2]).all()


def test_build_from_dict_and_defaults():
    m = build_model({"hidden": 8, "decoder_hidden": 8}, {"obs": OBS, "forcing": FORC, "static": []}, "{}")
    assert m.cfg.leads == 72 and m.cfg.history == 24
    with pytest.raises(ValueError):
        ModelConfig(quantiles=(0.5, 0.1, 0.9))


def test_no_observations_anywhere_still_finite():
    model, cfg = _model()
    obs, obs_mask, f, fm, s = _inputs(cfg)
    with torch.no_grad():
        y = model(obs * 0, obs_mask * 0, f, fm, s)
    assert torch.isfinite(y).all()


def test_masked_obs_values_ignored():
    model, cfg = _model()
    obs, obs_mask, f, fm, s = _inputs(cfg)
    obs2 = obs.clone()
    obs2[obs_mask == 0] = 999.0
    with torch.no_grad():
        assert torch.equal(model(obs, obs_mask, f, fm, s), model(obs2, obs_mask, f, fm, s))


def test_normalizer_round_trip_physical_units():
    names = ["obs_pm25", "met_sp", "obs_o3", "hour_sin"]
    norm = Normalizer(names, STATS)
    x = torch.tensor([[35.0, 1013.2, 160.0, -0.5], [0.0, 990.0, 0.0, 1.0]])
    z = norm(x, dim=1)
    assert torch.allclose(z[0, 0], torch.tensor((np.log1p(35.0) - 3.9) / 1.0, dtype=torch.float32))
    assert torch.allclose(norm.denormalize(z, dim=1), x, rtol=1e-5, atol=1e-3)
    assert norm.as_dict()["obs_pm25"]["log1p"] and not norm.as_dict()["met_sp"]["log1p"]


def test_log_forcings_normalise_skewed_forcings_in_log1p_space():
    """`model.log_forcings`: precipitation-like channels in log1p space (a downpour stays within ~25 sigma, not 125);
    a channel without log1p statistics or not among the forcings is refused by name."""
    stats = STATS | {"met_tp": {"mean": 0.053, "std": 0.573, "mean_log1p": 0.0244, "std_log1p": 0.165}}
    rain = torch.tensor([[0.0, 0.2, 71.6]])
    lin, lg = Normalizer(["met_tp"], stats), Normalizer(["met_tp"], stats, log_names=["met_tp"])
    assert float(lin(rain.T, dim=1).max()) > 120 and float(lg(rain.T, dim=1).max()) < 26
    z = lg(rain.T, dim=1)
    assert torch.allclose(z[:, 0], (torch.log1p(rain[0]) - 0.0244) / 0.165, atol=1e-5)
    assert torch.allclose(lg.denormalize(z, dim=1), rain.T, rtol=1e-4, atol=1e-5)  # expm1 back
    with pytest.raises(ValueError, match="met_sp is to be normalised in log1p space"):
        Normalizer(["met_sp"], stats, log_names=["met_sp"])
    forc = FORC + ["met_tp"]
    cfg = ModelConfig(**SMALL, log_forcings=["met_tp"])
    model = build_model(cfg, {"obs": OBS, "forcing": forc, "static": STATIC}, stats)
    assert model.forcing_norm.as_dict()["met_tp"]["log1p"] and not model.forcing_norm.as_dict()["met_t2m"]["log1p"]
    with pytest.raises(ValueError, match=r"not forcings of this model: \['met_tp'\]"):
        build_model(cfg, {"obs": OBS, "forcing": FORC, "static": STATIC}, stats)


def test_state_dict_round_trip_carries_normalisation():
    model, cfg = _model()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    other = build_model(cfg, {"obs": OBS, "forcing": FORC, "static": STATIC}, {}).eval()  # no stats
    buf.seek(0)
    other.load_state_dict(torch.load(buf))
    x = _inputs(cfg)
    with torch.no_grad():
        assert torch.equal(model(*x), other(*x))
    assert float(other.target_norm.mean[0]) == pytest.approx(3.9)


def test_locality_tileable():
    """Inputs further than the receptive field from a cell do not change that cell's forecast."""
    model, cfg = _model()
    obs, om, f, fm, s = _inputs(cfg, ny=40, nx=40)
    rf = cfg.receptive_field_cells()
    assert rf < 20
    obs2, f2 = obs.clone(), f.clone()
    obs2[..., :, 25:], f2[..., :, 25:] = obs2[..., :, 25:] + 50, f2[..., :, 25:] + 3
    om2 = om.clone()
    om2[..., :, 25:] = 1.0
    with torch.no_grad():
        y1, y2 = model(obs, om, f, fm, s), model(obs2, om2, f2, fm, s)
    col = 25 - rf - 1
    assert torch.equal(y1[..., :col + 1], y2[..., :col + 1])
    assert not torch.equal(y1, y2)


def test_gradients_flow():
    model, cfg = _model()
    model.train()
    y = model(*_inputs(cfg))
    y.mean().backward()
    assert model.stem.weight.grad is not None and torch.isfinite(model.stem.weight.grad).all()


def _sampler_model(store, init, history=6, leads=5):
    import json

    from features.windows import WindowSampler

    s = WindowSampler(store, [init], history=history, leads=leads)
    ch = {"obs": s.obs_vars, "forcing": s.forcing_vars, "static": s.static_vars}
    cfg = ModelConfig(**{**SMALL, "history": history, "leads": leads})
    torch.manual_seed(0)
    model = build_model(cfg, ch, json.loads(store.attrs["norm_stats"])).eval()
    return s, model


def _forecast(model, sample):
    keys = ("obs", "obs_mask", "forcing", "forcing_mask", "static")
    with torch.no_grad():
        return model(*[torch.from_numpy(sample[k])[None] for k in keys])


def test_no_future_pollutant_reaches_the_forecast(tiny_store):
    """Perturb every pollutant value after init in the store: inputs and forecast stay identical."""
    pytest.importorskip("features.windows")
    init = tiny_store["time"].values[100]
    s1, model = _sampler_model(tiny_store, init)
    ds2 = tiny_store.copy(deep=True)
    later = ds2["time"].values > init
    for v in list(ds2.data_vars):
        if v.startswith(("stn_", "obs_", "sat_")):
            arr = ds2[v].values
            arr[later] = np.where(np.isnan(arr[later]), 77.0, arr[later] * 3 + 10)
            ds2[v].values = arr
    s2, _ = _sampler_model(ds2, init)
    a, b = s1[0], s2[0]
    assert not np.array_equal(a["target"], b["target"])  # the perturbation was real
    for k in ("obs", "obs_mask"):
        np.testing.assert_array_equal(a[k], b[k])
    y1, y2 = _forecast(model, a), _forecast(model, b)
    assert torch.equal(y1, y2)
    assert y1.shape == (1, 5, 2, 3, tiny_store.sizes["y"], tiny_store.sizes["x"])
    # and the last observed hour does matter
    ds3 = tiny_store.copy(deep=True)
    at = ds3["time"].values == init
    for v in ("stn_pm25", "obs_pm25"):
        arr = ds3[v].values
        arr[at] = arr[at] * 4 + 50
        ds3[v].values = arr
    s3, _ = _sampler_model(ds3, init)
    assert not torch.equal(y1, _forecast(model, s3[0]))


def test_build_from_store_norm_stats_round_trip(tiny_store):
    import json

    stats = json.loads(tiny_store.attrs["norm_stats"])
    _, model = _sampler_model(tiny_store, tiny_store["time"].values[100])
    d = model.obs_norm.as_dict()
    assert d["obs_pm25"]["log1p"] and d["obs_pm25"]["mean"] == pytest.approx(stats["obs_pm25"]["mean_log1p"])
    assert model.forcing_norm.as_dict()["met_sp"]["mean"] == pytest.approx(stats["met_sp"]["mean"])
    assert model.target_norm.names == ["obs_pm25", "obs_o3"]


def test_trailing_forcing_windows_are_exact_means():
    """forcing_windows: the feature at lead l is the mean of the normalised forcing over the w hours ending at
    the valid hour (history hours included); a change after the valid hour cannot reach it."""
    model, cfg = _model(forcing_windows=[3, 6], decoder_layers=2)
    _, _, f, fm, _ = _inputs(cfg)
    feats = model.future_features(f, fm)
    cf, h = len(FORC), cfg.history
    assert feats.shape == (2, cfg.leads, 5 * cf, 10, 11)
    z = model.forcing_norm(f, dim=2)
    for lead_idx in range(cfg.leads):
        v = h + lead_idx
        for k, w in enumerate((3, 6)):
            want = z[:, v - w + 1:v + 1].mean(1)
            torch.testing.assert_close(feats[:, lead_idx, (3 + k) * cf:(4 + k) * cf], want, atol=1e-5, rtol=0)
    f2 = f.clone()
    f2[:, h + 2:] += 5.0  # change forcing after lead index 1
    assert torch.equal(model.future_features(f2, fm)[:, :2], feats[:, :2])


def test_forcing_changes_are_valid_minus_init_and_zero_where_either_is_missing():
    model, cfg = _model(forcing_windows=[3], forcing_changes=True)
    _, _, f, fm, _ = _inputs(cfg)
    cf, h = len(FORC), cfg.history
    fm = fm.clone()
    fm[0, h + 4, 0] = 0  # channel 0 missing at lead index 4 of the first sample
    fm[1, h - 1, 1] = 0  # channel 1 missing at the second sample's init hour
    feats = model.future_features(f, fm)
    assert feats.shape == (2, cfg.leads, 5 * cf, 10, 11)
    z = model.forcing_norm(f, dim=2)
    want = (z[:, h:] - z[:, h - 1:h]) * (fm[:, h:] > 0.5) * (fm[:, h - 1:h] > 0.5)
    torch.testing.assert_close(feats[:, :, 4 * cf:], want, atol=1e-5, rtol=0)
    assert (feats[0, 4, 4 * cf] == 0).all() and (feats[1, :, 4 * cf + 1] == 0).all()
    assert feats[0, 3, 4 * cf].abs().sum() > 0
    with torch.no_grad():
        y = model(*_inputs(cfg))
    assert (y[:, :, :, 0] <= y[:, :, :, 1]).all() and (y[:, :, :, 1] <= y[:, :, :, 2]).all()


def test_skip_gate_starts_as_the_plain_skip_and_can_close_it():
    plain, cfg = _model(forcing_windows=[3])
    gated, _ = _model(forcing_windows=[3], skip_gate=True)  # built last and zero-initialised: factor 1
    x = _inputs(cfg)
    with torch.no_grad():
        opened = gated(*x)
        torch.testing.assert_close(opened, plain(*x))
        gated.skip_gate.bias.fill_(-30.0)  # closed: nothing of the init-hour state passes the skip
        closed = gated(*x)
        plain.alpha.zero_()
        torch.testing.assert_close(closed, plain(*x), atol=1e-3, rtol=1e-4)
        assert (closed - opened).abs().max() > 1.0
        torch.nn.init.normal_(gated.skip_gate.weight, std=1.0)
        y = gated(*x)
    assert (y >= 0).all() and (y[:, :, :, 0] <= y[:, :, :, 1]).all() and (y[:, :, :, 1] <= y[:, :, :, 2]).all()


def test_decoder_film_starts_as_the_plain_decoder_and_then_acts():
    plain, cfg = _model(forcing_windows=[3], forcing_changes=True)
    film, _ = _model(forcing_windows=[3], forcing_changes=True, decoder_film=True)  # built last, zero-initialised
    x = _inputs(cfg)
    with torch.no_grad():
        torch.testing.assert_close(film(*x), plain(*x))
        torch.nn.init.normal_(film.film.weight, std=0.5)
        y = film(*x)
        assert (y - plain(*x)).abs().max() > 0.1
    assert (y >= 0).all() and (y[:, :, :, 0] <= y[:, :, :, 1]).all() and (y[:, :, :, 1] <= y[:, :, :, 2]).all()


def test_decoder_options_validate_and_stay_monotone():
    with pytest.raises(ValueError, match="forcing_windows"):
        ModelConfig(**{**SMALL, "forcing_windows": [12]})  # longer than the 6-h history
    with pytest.raises(ValueError):
        ModelConfig(decoder_layers=0)
    model, cfg = _model(forcing_windows=[2, 6], decoder_layers=3, decoder_hidden=12)
    with torch.no_grad():
        y = model(*_inputs(cfg))
    assert (y >= 0).all() and (y[:, :, :, 0] <= y[:, :, :, 1]).all() and (y[:, :, :, 1] <= y[:, :, :, 2]).all()


@pytest.mark.parametrize("species_decoders", [False, True])
def test_station_forward_matches_full_grid_with_decoder_options(species_decoders):
    from models.losses import gather_stations
    from training.module import station_forward

    model, cfg = _model(forcing_windows=[3, 6], decoder_layers=2, species_decoders=species_decoders)
    torch.nn.init.normal_(model.head.weight, std=0.1)
    x = _inputs(cfg)
    row, col = torch.tensor([[0, 4, 9], [3, 3, 7]]), torch.tensor([[1, 10, 5], [0, 6, 2]])
    with torch.no_grad():
        ref = gather_stations(model(*x), row, col)
        fast = station_forward(model, *x, row, col)
    torch.testing.assert_close(fast, ref, atol=1e-4, rtol=1e-4)


def test_lead_convs_are_causal_and_per_cell():
    """lead_dilations: a change in the forcing at lead index k cannot move leads before k, moves later ones
    through the lead convolutions, and the station-only decoder still matches the full grid."""
    from models.losses import gather_stations
    from training.module import station_forward

    with pytest.raises(ValueError, match="lead_dilations"):
        ModelConfig(**{**SMALL, "lead_dilations": [5]})  # 5 leads: dilation 5 reaches nothing
    model, cfg = _model(lead_dilations=[1, 2], decoder_layers=2)
    torch.nn.init.normal_(model.head.weight, std=0.1)
    plain = copy.deepcopy(model)  # lead convs zero-initialised: the identity
    for lc in model.lead_convs:
        torch.nn.init.normal_(lc.conv.weight, std=0.2)
    x = list(_inputs(cfg))
    with torch.no_grad():
        y, y_plain = model(*x), plain(*x)
        f2 = x[2].clone()
        f2[:, cfg.history + 2] += 3.0  # lead index 2 only
        y2, y2_plain = model(*x[:2], f2, *x[3:]), plain(*x[:2], f2, *x[3:])
    assert torch.equal(y2[:, :2], y[:, :2])
    assert torch.equal(y2_plain[:, :2], y_plain[:, :2])
    # later leads respond through the lead convolutions, not only through the running mean since init
    assert not torch.allclose(y2[:, 3:] - y[:, 3:], y2_plain[:, 3:] - y_plain[:, 3:], atol=1e-3)
    row, col = torch.tensor([[0, 4, 9], [3, 3, 7]]), torch.tensor([[1, 10, 5], [0, 6, 2]])
    with torch.no_grad():
        torch.testing.assert_close(station_forward(model, *x, row, col), gather_stations(y, row, col),
                                   atol=1e-4, rtol=1e-4)


def test_exact_persistence_skip_uses_the_cells_own_observation():
    """With `persistence_exact`, an observed cell's skip base is its own init-hour value, not a blur."""
    model, cfg = _model(persistence_exact=True)
    blurred, _ = _model()
    obs, obs_mask, *_ = _inputs(cfg)
    base, base_blur = model._obs_features(obs, obs_mask)[1][:, :2], blurred._obs_features(obs, obs_mask)[1][:, :2]
    z = model.obs_norm(obs, dim=2)[:, -1, [0, 3]]  # pm25, o3 at the init hour, normalised
    seen = obs_mask[:, -1, [0, 3]] > 0.5
    assert seen.any() and (~seen).any()
    assert torch.allclose(base[seen], z[seen])
    assert not torch.allclose(base_blur[seen], z[seen], atol=1e-3)
    assert torch.allclose(base[~seen], base_blur[~seen])  # unobserved cells keep the spread value


def test_head_gain_switches_the_decoder_term_per_lead():
    """head_gain scales only the decoder's P50 term of its lead: at gain 0 the P50 is the persistence skip."""
    model, cfg = _model(persistence_exact=True)
    inputs = _inputs(cfg)
    with torch.no_grad():
        torch.nn.init.normal_(model.head.weight, std=0.5)
        before = model(*inputs)
        model.head_gain[0].zero_()
        after = model(*inputs)
        base = model._obs_features(*inputs[:2])[1][:, :2]  # skip values (then station weights)
        skip = model.target_norm.denormalize((model.alpha[0].reshape(1, 2, 1, 1) * base), dim=1).clamp(min=0)
    assert torch.equal(before[:, 1:], after[:, 1:])  # other leads untouched
    assert not torch.allclose(before[:, 0, :, 1], after[:, 0, :, 1])
    assert torch.allclose(after[:, 0, :, 1], skip, rtol=1e-4, atol=1e-3)


def test_species_decoders_share_the_encoder_but_no_decoder_feature():
    """species_decoders: ozone's decoder half (grouped convolutions) moves ozone only, PM2.5's PM2.5 only; the
    encoder still moves both."""
    model, cfg = _model(forcing_windows=[3], forcing_changes=True, decoder_layers=2, lead_dilations=[1],
                        skip_gate=True, species_decoders=True)
    d = cfg.decoder_hidden
    assert model.z_proj.out_channels == 2 * d and model.head.groups == 2
    x = _inputs(cfg)
    with torch.no_grad():
        for lc in model.lead_convs:
            torch.nn.init.normal_(lc.conv.weight, std=0.3)
        torch.nn.init.normal_(model.skip_gate.weight, std=0.3)
        y = model(*x)
        for half, moved in ((slice(d, 2 * d), 1), (slice(0, d), 0)):
            m = copy.deepcopy(model)
            m.z_proj.weight[half] += 0.5  # the state's projection into one species' decoder
            m.dec.weight[half] *= -1.0
            m.lead_emb[:, half] += 1.0
            y2 = m(*x)
            torch.testing.assert_close(y2[:, :, 1 - moved], y[:, :, 1 - moved])
            assert (y2[:, :, moved] - y[:, :, moved]).abs().max() > 0.1
        m = copy.deepcopy(model)
        m.blocks[0].c1.weight += 0.2
        m.blocks[0].c2.weight.normal_(std=0.2)
        y3 = m(*x)
        assert all((y3[:, :, s] - y[:, :, s]).abs().max() > 1e-3 for s in (0, 1))
