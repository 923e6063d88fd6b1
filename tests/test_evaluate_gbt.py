"""`evaluate_model` scores the GBT reference on the deep model's samples at input stations (tiny store)."""
import json

import numpy as np
import pytest
import torch

from models import build_model
from models.config import ModelConfig

torch.set_num_threads(1)
SMALL = {"history": 6, "leads": 5, "hidden": 8, "decoder_hidden": 8, "dilations": [1, 2],
         "spread_sigmas": [1.0, 3.0], "spread_recent": 2, "spread_stride": 2, "history_forcing_stride": 2}


@pytest.fixture(scope="module")
def model_meta(tiny_store):
    from features.windows import WindowSampler

    s = WindowSampler(tiny_store, [tiny_store["time"].values[50]], history=6, leads=5)
    ch = {"obs": s.obs_vars, "forcing": s.forcing_vars, "static": s.static_vars}
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SMALL), ch, json.loads(tiny_store.attrs["norm_stats"])).eval()
    return model, {"grid": tiny_store.attrs["grid"], "channels": ch, "history": 6, "leads": 5}


def test_gbt_column_on_same_samples(tmp_path, tiny_store, model_meta):
    from training.evaluate import evaluate_model

    model, meta = model_meta
    kw = {"held_out": ["Delta"], "gbt_kw": {"max_iter": 15}, "gbt_cache": str(tmp_path / "cache"),
          "source": "tiny", "name": "sc"}
    rep = evaluate_model(model, meta, tiny_store, "2021-01-15T08:00+08:00", "2021-01-18T08:00+08:00", "12h",
                         out_dir=tmp_path, **kw)
    tr, ho = rep["results"]["train_stations"], rep["results"]["held_out_stations"]
    assert "skill_vs_gbt" in tr and "mae_ref_gbt" in tr
    assert "skill_vs_gbt" not in ho and "mae_ref_gbt" not in ho  # no history at held-out points
    # same (init, lead, station) samples as the deep model: same n, skill consistent with the two MAEs
    assert np.array_equal(tr["n_ref_gbt"], tr["n"]) and tr["n"].sum() > 0
    np.testing.assert_allclose(tr["skill_vs_gbt"], 1 - tr["mae"] / tr["mae_ref_gbt"], rtol=1e-6)
    assert np.isfinite(tr["mae_ref_gbt"]).all()
    summ = rep["summary"]["train_stations"]
    assert {"deep", "gbt", "blend", "persistence", "climatology", "n"} <= set(summ)
    md = rep["scorecard"].read_text()
    assert rep["scorecard"].name == "sc.md" and rep["png"].name == "sc.png"
    assert "MAE gbt" in md and "skill vs gbt" in md and "## Acceptance checks" in md
    assert "n/a (no history at the point)" in md and "perfect forecast" in md
    ci = summ["gbt_margin_ci"]  # [2, L, 2]: lower <= upper, and the interval's width shows in the checks
    assert ci.shape == (2, 5, 2) and np.all(ci[0] <= ci[1]) and "90 % interval, 7-day blocks" in md
    assert "train_stations.pm25.mae_ref_gbt.mean" in rep["metrics"]
    assert len(list((tmp_path / "cache").glob("gbt-*.pkl"))) == 1
    # second run: the fitted GBT comes from the cache and gives identical scores
    rep2 = evaluate_model(model, meta, tiny_store, "2021-01-15T08:00+08:00", "2021-01-18T08:00+08:00", "12h",
                          out_dir=tmp_path / "b", **kw)
    assert "loaded from cache" in rep2["scorecard"].read_text()
    assert "GBT reference (models/gbt.py, HistGradientBoosting quantile, observed = perfect met like the deep " \
           "model) at the input stations, fitted on " in rep2["scorecard"].read_text()  # how, also from the cache
    np.testing.assert_array_equal(rep2["results"]["train_stations"]["mae_ref_gbt"], tr["mae_ref_gbt"])


def test_no_gbt_flag(tmp_path, tiny_store, model_meta):
    from training.evaluate import evaluate_model

    model, meta = model_meta
    rep = evaluate_model(model, meta, tiny_store, "2021-01-15T08:00+08:00", "2021-01-16T08:00+08:00", "12h",
                         held_out=["Delta"], out_dir=tmp_path, gbt=False)
    assert "skill_vs_gbt" not in rep["results"]["train_stations"]
    assert "GBT reference: off" in rep["scorecard"].read_text()


def _errors(n: int, rng, scale_ref: float = 1.0, scale_pred: float = 0.5):
    obs = rng.gamma(2.0, 30.0, (n, 3, 2, 4))
    ref = obs + scale_ref * rng.normal(0, 10, obs.shape)
    pred = obs + scale_pred * (ref - obs)
    return pred, ref, obs


def test_margin_interval_brackets_the_margin():
    from training.evaluate_gbt import margin_interval

    rng = np.random.default_rng(0)
    pred, ref, obs = _errors(400, rng)
    ci = margin_interval(pred, ref, obs, block=7)
    np.testing.assert_allclose(ci, 0.5, atol=1e-9)  # every error exactly halved: no spread at all
    np.testing.assert_allclose(margin_interval(ref, ref, obs, block=7), 0.0, atol=1e-12)
    noisy = obs + rng.normal(0, 5, obs.shape)  # MAE about half the reference's, with sample noise
    ci = margin_interval(noisy, ref, obs, block=7)
    point = 1 - np.abs(noisy - obs).mean(axis=(0, 3)) / np.abs(ref - obs).mean(axis=(0, 3))
    assert np.all(ci[0] < point) and np.all(point < ci[1]) and np.all(ci[1] - ci[0] < 0.2)
    # fewer inits, wider interval; missing samples are left out, not counted as zero error
    short = margin_interval(noisy[:40], ref[:40], obs[:40], block=7)
    assert np.all(short[1] - short[0] > ci[1] - ci[0])
    gappy = obs.copy()
    gappy[::2] = np.nan
    ci_gap = margin_interval(noisy, ref, gappy, block=7)
    assert np.isfinite(ci_gap).all() and np.all(ci_gap[0] < point + 0.1) and np.all(ci_gap[1] > point - 0.1)


def test_margin_interval_blocks_widen_for_correlated_errors():
    """Errors shared by a week of inits (one weather regime): resampling single inits understates the spread."""
    from training.evaluate_gbt import margin_interval

    rng = np.random.default_rng(1)
    n, block = 364, 28
    obs = np.full((n, 1, 2, 1), 50.0)
    ref = obs + 10.0
    regime = np.repeat(rng.normal(0, 6, n // block), block)[:, None, None, None]
    pred = obs + np.abs(5.0 + regime)
    by_block = margin_interval(pred, ref, obs, block=block)
    by_init = margin_interval(pred, ref, obs, block=1)
    assert np.all(by_block[1] - by_block[0] > 2 * (by_init[1] - by_init[0]))
