"""docs/scorecard/run_means.py: whole runs are averaged as the ensemble averages its members (log1p space)."""
import numpy as np
from conftest import load_script


def test_the_mean_is_taken_in_log1p_space_with_negatives_clipped():
    rm = load_script("run_means")
    a, b = np.array([[1.0, 0.0, 99.0]]), np.array([[3.0, -5.0, 0.0]])
    got = rm.log_mean([a, b])
    np.testing.assert_allclose(got, [[np.sqrt(2 * 4) - 1, 0.0, np.sqrt(100) - 1]])  # geometric mean of 1 + p
    np.testing.assert_allclose(rm.log_mean([a]), a)
    assert got[0, 0] < (1 + 3) / 2  # not the plain mean
