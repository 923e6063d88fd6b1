"""AQI against the HJ 633-2012 breakpoints in domain.md; verification scores on hand-made cases."""
import numpy as np
import pytest

from features.aqi import aqi, category, category_name, iaqi, primary_pollutant
from training.metrics import (
    aqi_class_accuracy,
    basic_scores,
    contingency,
    coverage,
    daily_means,
    evaluate_forecast,
    mae_skill,
    to_rows,
)


@pytest.mark.parametrize("pol,conc,expected", [
    ("pm25", 0, 0), ("pm25", 35, 50), ("pm25", 75, 100), ("pm25", 115, 150), ("pm25", 150, 200),
    ("pm25", 250, 300), ("pm25", 350, 400), ("pm25", 500, 500), ("pm25", 55, 75),
    ("o3", 160, 50), ("o3", 200, 100), ("o3", 300, 150), ("o3", 800, 300), ("o3", 1200, 500), ("o3", 180, 75),
    ("pm10", 150, 100), ("co", 10, 100), ("no2", 200, 100), ("so2_24h", 150, 100), ("o3_8h", 160, 100),
])
def test_iaqi_breakpoints(pol, conc, expected):
    assert iaqi(conc, pol) == expected


def test_iaqi_rounds_up_nan_and_negative():
    assert iaqi(36, "pm25") == 52  # 51.25 -> 52
    assert np.isnan(iaqi(np.nan, "pm25"))
    assert iaqi(-3, "pm25") == 0
    assert iaqi(600, "pm25") > 500


def test_aqi_max_and_primary():
    assert aqi(pm25=75, o3=300) == 150
    assert primary_pollutant(pm25=75, o3=300) == "o3"
    assert primary_pollutant(pm25=10, o3=20) == ""
    assert aqi(pm25=np.nan, o3=160) == 50
    assert np.isnan(aqi(pm25=np.nan, o3=np.nan))


def test_categories_en_zh():
    np.testing.assert_array_equal(category([0, 50, 51, 100, 101, 150, 151, 200, 201, 300, 301, np.nan]),
                                  [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 0])
    assert category_name(1) == "Excellent" and category_name(1, "zh") == "优"
    assert category_name(6, "zh") == "严重污染" and category_name(3) == "Lightly polluted"
    with pytest.raises(ValueError):
        category_name(7)


def test_contingency_hand_case():
    fc = np.array([80, 80, 10, 10, 90, np.nan])
    ob = np.array([90, 10, 90, 10, np.nan, 90])
    c = contingency(fc, ob, 75)
    assert (c["hits"], c["misses"], c["false_alarms"], c["correct_negatives"]) == (1, 1, 1, 1)
    assert c["csi"] == pytest.approx(1 / 3) and c["pod"] == 0.5 and c["far"] == 0.5
    c0 = contingency(np.array([1.0]), np.array([2.0]), 75)
    assert np.isnan(c0["csi"]) and np.isnan(c0["pod"]) and np.isnan(c0["far"])


def _fc(n=5, n_l=48, s=3, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.gamma(2, 40, (n, n_l, 2, s))
    p50 = obs + rng.normal(0, 10, obs.shape)
    pred = np.stack([p50 - 20, p50, p50 + 20], axis=3)
    return pred, p50, obs


def test_basic_scores_and_skill():
    _, _, obs = _fc()
    obs[0, 0, 0, 0] = np.nan
    sc = basic_scores(obs + 2.0, obs)
    np.testing.assert_allclose(sc["mae"], 2.0)
    np.testing.assert_allclose(sc["bias"], 2.0)
    np.testing.assert_allclose(sc["corr"], 1.0)
    assert sc["n"][0, 0] == 5 * 3 - 1
    sk = mae_skill(obs + 1.0, obs + 2.0, obs)
    np.testing.assert_allclose(sk, 0.5)


def test_coverage_daily_and_aqi_accuracy():
    pred, _, obs = _fc()
    cov = coverage(pred, obs)
    assert cov.shape == (48, 2) and (cov > 0.5).all()
    o = np.array([1.0, 5.0, 10.0, 20.0]).reshape(4, 1, 1, 1).repeat(2, axis=2)
    band = np.stack([np.full_like(o, 2.0), np.full_like(o, 6.0), np.full_like(o, 10.0)], axis=3)
    np.testing.assert_allclose(coverage(band, o), 0.5)  # 5 and 10 inside (inclusive)
    x = np.ones((1, 48, 1))
    x[0, 24:] = 3.0
    x[0, 24:31] = np.nan  # 17 valid hours on day 2 -> NaN
    np.testing.assert_allclose(daily_means(x)[0, :, 0], [1.0, np.nan])
    acc = aqi_class_accuracy(obs, obs)
    np.testing.assert_allclose(acc, 1.0)


def test_evaluate_forecast_rows():
    pred, _, obs = _fc(n_l=72)
    res = evaluate_forecast(pred, obs, refs={"persistence": obs[:, :1].repeat(72, axis=1)})
    assert res["mae"].shape == (72, 2) and res["daily_pm25_gt75_csi"].shape == (3,)
    rows = to_rows(res, "train_stations", "m")
    assert {r["metric"] for r in rows} >= {"mae", "skill_vs_persistence", "pm25_gt75_csi", "coverage_p10_p90"}
