"""models/rolling_bands.py: the trailing-window rescaling of the P10-P90 band is causal and hits its target."""
import numpy as np

from models.rolling_bands import apply_factors, band_factors, band_z

H = np.timedelta64(1, "h")


def _band(p50: np.ndarray, half: float) -> np.ndarray:
    """P10/P50/P90 with a symmetric gap `half` in log1p space, stacked on a last axis."""
    lp = np.log1p(p50)
    return np.expm1(np.stack([lp - half, lp, lp + half], -1))


def test_band_z_is_one_on_the_band_edges_zero_at_the_median_and_nan_where_unobserved():
    pred = _band(np.full(4, 50.0), 0.2)
    obs = np.array([pred[0, 2], pred[1, 0], 50.0, np.nan])
    z = band_z(pred, obs)
    np.testing.assert_allclose(z[:3], [1.0, 1.0, 0.0], atol=1e-9)
    assert np.isnan(z[3])


def test_factors_use_only_forecasts_verified_by_the_init_and_reach_the_target_coverage():
    rng = np.random.default_rng(0)
    n, n_l, s = 80, 72, 10
    inits = np.datetime64("2016-03-01T00") + np.arange(n) * 24 * H
    z = np.abs(rng.normal(size=(n, n_l, 2, s))) * np.array([1.0, 1.5])[None, None, :, None]
    z[0, 30:] = 1e6                  # the first init's leads past 24 h: not yet verified at the second init
    k = band_factors(inits, z, window_days=30, prior_n=0, bounds=(0.1, 1e9))
    assert np.all(k[0] == 1.0)                                  # nothing verified at the first init
    np.testing.assert_allclose(k[1], np.quantile(z[0, :24], 0.8, axis=(0, 2)))
    late = k[40:]                                               # the window full: 30 days of verified forecasts
    cover = (z[40:, :, :, :] <= late[:, None, :, None]).mean(axis=(0, 1, 3))
    np.testing.assert_allclose(cover, 0.8, atol=0.02)
    assert abs(late[:, 1].mean() / late[:, 0].mean() - 1.5) < 0.1
    shrunk = band_factors(inits, z, window_days=30, prior_n=10**9)
    np.testing.assert_allclose(shrunk, 1.0, atol=1e-3)          # no evidence weight: the model's own band


def test_apply_scales_both_gaps_in_log_space_and_keeps_the_median():
    band = _band(np.array([5.0, 80.0]), 0.3).T                           # [3 quantiles, 2 cells]
    pred = np.broadcast_to(band, (1, 1, 2, 3, 2)).copy()                  # [N, L, species, quantile, cell]
    k = np.array([[1.0, 2.0]])
    out = apply_factors(pred, k)
    np.testing.assert_allclose(out[:, :, 0], pred[:, :, 0], rtol=1e-5)
    np.testing.assert_array_equal(out[:, :, :, 1], pred[:, :, :, 1])      # bit for bit
    lp, lo = np.log1p(pred[0, 0, 1]), np.log1p(out[0, 0, 1])           # species 1 (k = 2): [3, cells]
    np.testing.assert_allclose(lo[2] - lo[1], 2 * (lp[2] - lp[1]), rtol=1e-5)
    np.testing.assert_allclose(lo[1] - lo[0], 2 * (lp[1] - lp[0]), rtol=1e-5)
    only = apply_factors(pred, k, where=np.array([False, True]))   # the second cell only
    np.testing.assert_array_equal(only[..., 0], pred[..., 0])
    np.testing.assert_allclose(only[..., 1], out[..., 1], rtol=1e-6)
    big = apply_factors(pred, np.array([[50.0, 50.0]]))
    assert (big >= 0).all() and (np.diff(big, axis=3) >= 0).all()
