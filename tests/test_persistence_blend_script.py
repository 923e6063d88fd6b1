"""docs/scorecard/persistence_blend.py: the P50 blended toward the init-hour observation (thirty-fifth round)."""

import numpy as np
from conftest import load_script


def test_the_log1p_blend_is_the_one_training_fits_and_leaves_inits_without_an_observation():
    from training.blend_fit import fit_weights

    mod = load_script("persistence_blend")
    rng = np.random.default_rng(0)
    n, n_l, s = 400, 3, 4
    p50 = np.exp(rng.normal(3.5, 0.8, (n, n_l, 2, s)))
    last = np.exp(rng.normal(3.5, 0.8, (n, 2, s)))
    want = np.array([[0.8, 0.5], [0.3, 0.0], [1.0, 0.1]])  # [L, 2]
    truth = mod.blend(p50, last, want)
    a = fit_weights(np.log1p(p50), np.log1p(last), np.log1p(truth))  # fitted in log1p space, as in the script
    np.testing.assert_allclose(a, want, atol=0.011)
    last[0, 0, 0] = np.nan  # this init's station did not observe PM2.5: its P50 is left as it was
    out = mod.blend(p50, last, want)
    np.testing.assert_array_equal(out[0, :, 0, 0], p50[0, :, 0, 0])
    assert not np.allclose(out[1, :, 0, 0], p50[1, :, 0, 0])
