"""Baselines: persistence / diurnal / climatology / blend / quantiles / IDW on hand-made series."""
import numpy as np

from models.baselines import (
    BaselineSuite,
    Climatology,
    diurnal_persistence,
    ffill,
    idw_persistence,
    observed,
    persistence,
)


def _series(t=24 * 60, s=3, seed=0):
    rng = np.random.default_rng(seed)
    times = np.datetime64("2014-01-01T00:00", "ns") + np.arange(t) * np.timedelta64(1, "h")
    hour = np.arange(t) % 24
    base = 50 + 30 * np.sin(2 * np.pi * hour / 24)
    x = np.stack([base + rng.normal(0, 5, t), base / 2 + rng.normal(0, 2, t)], 1)[:, :, None] + np.arange(s)
    return x.astype(float), times


def test_ffill_limit():
    x = np.array([1.0, np.nan, np.nan, np.nan, 5.0])
    np.testing.assert_array_equal(ffill(x, 2), [1, 1, 1, np.nan, 5])


def test_persistence_and_no_future_reads():
    x, _ = _series()
    init = np.array([30, 100])
    p = persistence(x, init, 72)
    assert p.shape == (2, 72, 2, 3)
    np.testing.assert_array_equal(p[0, 5], x[30])
    y = x.copy()
    y[31:] = 1e6  # the future
    for fn in (persistence, diurnal_persistence):
        np.testing.assert_array_equal(fn(x, init[:1], 72), fn(y, init[:1], 72))


def test_diurnal_persistence_same_hour_last_day():
    x, _ = _series()
    d = diurnal_persistence(x, np.array([50]), 72)
    np.testing.assert_array_equal(d[0, 0], x[51 - 24])  # lead 1
    np.testing.assert_array_equal(d[0, 23], x[50])  # lead 24 -> init hour
    np.testing.assert_array_equal(d[0, 24], x[51 - 24])  # lead 25 -> same hour as lead 1


def test_climatology_uses_training_rows_only():
    x, times = _series()
    train = np.arange(len(times)) < 24 * 30
    c1 = Climatology().fit(x, times, train)
    y = x.copy()
    y[~train] += 1000
    c2 = Climatology().fit(y, times, train)
    np.testing.assert_array_equal(c1.table, c2.table)
    # local hour 8 == UTC 0 with +08:00
    v = c1.at(times[:1])
    assert abs(v[0, 0, 0] - np.nanmean(x[:24 * 30:24, 0, 0])) < 1e-9
    pooled = c1.at(times[:1], np.array([-1]))
    assert abs(pooled[0, 0, 0] - c1.pooled[0, 8, 0]) < 1e-9


def test_suite_blend_beats_or_matches_parts_and_quantiles_ordered():
    x, times = _series(t=24 * 120)
    train = np.arange(len(times)) < 24 * 80
    tr_init = np.arange(24, 24 * 80 - 72, 3)
    suite = BaselineSuite(leads=72).fit(x, times, train, tr_init)
    te_init = np.arange(24 * 80, 24 * 120 - 72, 6)
    preds = suite.predict(x, times, te_init)
    obs = observed(x, te_init, 72)
    mae = {k: np.nanmean(np.abs(v[:, :, :, 1] - obs)) for k, v in preds.items()}
    assert mae["blend"] <= min(mae["persistence"], mae["climatology"]) + 0.5
    for v in preds.values():
        assert v.shape == (len(te_init), 72, 2, 3, 3)
        assert (np.diff(v, axis=3) >= -1e-9).all() and (v >= 0).all()


def test_idw_excludes_self_and_interpolates():
    x, _ = _series(s=2)
    x[:, :, 1] = x[:, :, 0] + 10
    src = np.array([[116.0, 40.0], [116.2, 40.0]])
    dst = np.array([[116.1, 40.0], [116.0, 40.0]])
    v = idw_persistence(x, np.array([30]), src, dst, leads=3)
    np.testing.assert_allclose(v[0, 0, :, 0], x[30, :, :].mean(1))  # midpoint: equal weights
    np.testing.assert_allclose(v[0, 0, :, 1], x[30, :, 1])  # itself excluded


def _station_series(t=24 * 40, s=3, seed=1):
    from models.stations import StationSeries

    rng = np.random.default_rng(seed)
    x, times = _series(t, s, seed)
    vals = {"pm25": x[:, 0], "o3": x[:, 1], "no2": x[:, 0] * 0.5 + rng.normal(0, 1, (t, s)),
            "t2m": rng.normal(10, 3, (t, s)), "ws": rng.gamma(2, 1, (t, s)), "u10": rng.normal(0, 2, (t, s)),
            "v10": rng.normal(0, 2, (t, s)), "tp": np.zeros((t, s))}
    return StationSeries(times, [f"s{i}" for i in range(s)], np.array([116.0, 116.1, 116.2][:s]),
                         np.array([40.0] * s), vals)


def test_gbt_fit_predict_shapes_and_no_future_reads():
    from models.gbt import GBTReference

    ss = _station_series()
    train = np.arange(ss.times.size) < 24 * 30
    g = GBTReference(leads=24, max_iter=20, min_samples_leaf=20).fit(ss, train, np.arange(24, 24 * 29, 5),
                                                                     leads_per_init=4)
    init = np.array([24 * 31, 24 * 32 + 7])
    p = g.predict(ss, init)
    assert p.shape == (2, 24, 2, 3, 3) and np.isfinite(p).all() and (p >= 0).all()
    assert (np.diff(p, axis=3) >= -1e-6).all()
    fut = ss.subset([0, 1, 2])
    for k in ("pm25", "o3", "no2"):
        fut.values[k] = fut.values[k].copy()
        fut.values[k][init[0] + 1:] += 500.0  # pollutant future of the first init
    np.testing.assert_array_equal(g.predict(fut, init[:1]), p[:1])
