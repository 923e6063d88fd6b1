"""docs/scorecard/running_bias.py: the running bias correction uses only errors verified by each init."""
import numpy as np
from conftest import load_script


def _load():
    return load_script("running_bias")


def _series(rng, n=80, n_l=12, every=6):
    """p50 and obs [N, L, 2, S] from one hourly truth, obs = truth at valid time init + lead."""
    truth = np.exp(rng.normal(3.0, 0.5, size=(n * every + n_l + 1, 2, 3)))
    obs = np.stack([truth[np.arange(n) * every + lead] for lead in range(1, n_l + 1)], 1)
    return truth, obs


def test_a_constant_factor_is_removed_and_shrink_zero_changes_nothing():
    rb = _load()
    _, obs = _series(np.random.default_rng(0))
    p50 = np.expm1(np.log1p(obs) - 0.3)  # every forecast 0.3 too low in log1p space
    fixed = rb.running_log_bias(p50, obs, every_h=6, days=3, shrink=1.0)
    np.testing.assert_allclose(fixed[20:], obs[20:], rtol=1e-9)  # after warm-up: the bias is gone
    np.testing.assert_allclose(fixed[0], p50[0])  # nothing had verified at the first init
    np.testing.assert_allclose(rb.running_log_bias(p50, obs, 6, 3, 0.0), p50)


def test_no_observation_after_the_init_reaches_its_correction():
    rb = _load()
    rng = np.random.default_rng(1)
    every, n_l = 6, 12
    truth, obs = _series(rng, every=every, n_l=n_l)
    p50 = obs * np.exp(rng.normal(0, 0.3, size=obs.shape))
    base = rb.running_log_bias(p50, obs, every, 7, 0.5)
    i = 40  # init at hour 240: perturb every observation valid after it
    t_init = i * every
    future = truth.copy()
    future[t_init + 1:] *= 3.0
    obs2 = np.stack([future[np.arange(obs.shape[0]) * every + lead] for lead in range(1, n_l + 1)], 1)
    moved = rb.running_log_bias(p50, obs2, every, 7, 0.5)
    np.testing.assert_array_equal(moved[: i + 1], base[: i + 1])
    assert not np.allclose(moved[i + 3:], base[i + 3:])  # later inits do see them
