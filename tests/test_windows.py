"""Window sampler: no future leakage, labels, withheld stations, deterministic drop-out, calendar."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.calendar import CALENDAR_VARS, calendar_features
from features.errors import DataError
from features.windows import WindowSampler, sample_coords, valid_init_times

H, L = 24, 72


def _idx(ds, t) -> int:
    return int(np.flatnonzero(ds["time"].values == np.datetime64(t, "ns"))[0])


def test_valid_init_times_inside_store(tiny_store) -> None:
    t = tiny_store["time"].values
    inits = valid_init_times(tiny_store)
    assert inits[0] == t[H - 1] and inits[-1] == t[-1 - L] and len(inits) == t.size - H - L + 1
    daily = valid_init_times(tiny_store, every_h=24)
    assert all(pd.Timestamp(x).hour == 0 for x in daily)
    sub = valid_init_times(tiny_store, "2021-01-05T08:00+08:00", "2021-01-06")
    assert sub[0] == np.datetime64("2021-01-05T00:00", "ns") and sub[-1] == np.datetime64("2021-01-06", "ns")
    with pytest.raises(DataError, match="no complete window"):
        WindowSampler(tiny_store, [t[5]])


def test_shapes_and_dtypes(tiny_store) -> None:
    s = WindowSampler(tiny_store, valid_init_times(tiny_store, every_h=24))
    x = s[0]
    C_obs, C_f = len(s.obs_vars), len(s.forcing_vars)
    assert x["obs"].shape == x["obs_mask"].shape == (H, C_obs, 16, 16)
    assert x["forcing"].shape == x["forcing_mask"].shape == (H + L, C_f, 16, 16)
    assert x["static"].shape == (len(s.static_vars), 16, 16)
    assert x["target"].shape == x["target_mask"].shape == (L, 2, 4)
    assert x["station_row"].shape == (4,) and x["init_time"].dtype == np.int64
    for k in ("obs", "obs_mask", "forcing", "forcing_mask", "static", "target", "target_mask"):
        assert x[k].dtype == np.float32 and np.isfinite(x[k]).all()
    assert s.forcing_vars[-5:] == list(CALENDAR_VARS) and "sat_aod" in s.obs_vars


def test_no_future_pollutant_value_enters_obs(tiny_store) -> None:
    inits = valid_init_times(tiny_store, every_h=24)
    init = inits[3]
    k = _idx(tiny_store, init)
    a = WindowSampler(tiny_store, [init])[0]
    ds = tiny_store.copy(deep=True)
    for v in ds.data_vars:
        if v.startswith(("stn_", "obs_", "sat_")):
            ds[v].values[k + 1:] = ds[v].values[k + 1:] * 7 + 3  # perturb every value after init
    b = WindowSampler(ds, [init])[0]
    assert np.array_equal(a["obs"], b["obs"]) and np.array_equal(a["obs_mask"], b["obs_mask"])
    assert not np.array_equal(a["target"], b["target"])
    # ... and values at init do enter obs (last history step)
    ds2 = tiny_store.copy(deep=True)
    ds2["stn_pm25"].values[k] += 100
    c = WindowSampler(ds2, [init])[0]
    assert not np.array_equal(a["obs"][-1], c["obs"][-1]) and np.array_equal(a["obs"][:-1], c["obs"][:-1])


def test_labels_and_target_alignment(tiny_store) -> None:
    init = valid_init_times(tiny_store, every_h=24)[2]
    s = WindowSampler(tiny_store, [init])
    x = s[0]
    c = sample_coords(x["init_time"])
    assert c["init_time"] == init and c["lead_time"][0] == 1 and c["lead_time"][-1] == L
    assert np.all(c["valid_time"] == init + np.arange(1, L + 1) * np.timedelta64(1, "h"))
    assert all(np.array_equal(c[k], s.coords(0)[k]) for k in c)
    k = _idx(tiny_store, init)
    pm = tiny_store["stn_pm25"].values
    for lead in (1, 24, 72):
        j = 1  # Bravo; unflagged at these times
        if np.isfinite(pm[k + lead, j]):
            assert x["target"][lead - 1, 0, j] == pm[k + lead, j] and x["target_mask"][lead - 1, 0, j] == 1
    r, col = tiny_store["station_row"].values[0], tiny_store["station_col"].values[0]
    obs_pm = tiny_store["stn_pm25"].values[k - H + 1:k + 1, 0]
    ok = np.isfinite(obs_pm)
    assert np.allclose(x["obs"][ok, 0, r, col], obs_pm[ok]) and (x["obs_mask"][~ok, 0, r, col] == 0).all()
    # calendar forcing: local hour of init + lead
    hs = s.forcing_vars.index("hour_sin")
    cal = calendar_features(init + np.arange(-H + 1, L + 1) * np.timedelta64(1, "h"), "+08:00")
    assert np.allclose(x["forcing"][:, hs, 3, 3], cal[:, 0])


def test_qc_flagged_values_are_masked(tiny_store) -> None:
    t = tiny_store["time"].values
    s = WindowSampler(tiny_store, [t[51]])
    x = s[0]
    r, c = tiny_store["station_row"].values[1], tiny_store["station_col"].values[1]
    assert x["obs_mask"][-1, 0, r, c] == 0 and x["obs"][-1, 0, r, c] == 0  # hour 51 flagged SPIKE at Bravo
    y = WindowSampler(tiny_store, [t[49]])[0]
    assert y["target_mask"][0, 0, 1] == 0 and y["target_mask"][1, 0, 1] == 0  # valid hours 50, 51


def test_withheld_stations_never_in_obs(tiny_store) -> None:
    inits = valid_init_times(tiny_store, every_h=6)
    s = WindowSampler(tiny_store, inits, input_stations=["Alpha", "Bravo", "Charlie"], drop_prob=0.5, seed=3)
    r, c = tiny_store["station_row"].values[3], tiny_store["station_col"].values[3]
    pol = [i for i, v in enumerate(s.obs_vars) if not v.startswith("sat_")]
    for e in range(2):
        s.set_epoch(e)
        for i in range(len(s)):
            x = s[i]
            assert (x["obs"][:, pol, r, c] == 0).all() and (x["obs_mask"][:, pol, r, c] == 0).all()
            assert x["station_in_input"][3] == 0 and x["station_withheld"][3] == 1
            assert x["target_mask"][:, :, 3].sum() > 0  # still a target (evaluation station)
    ev = WindowSampler(tiny_store, inits, input_stations=["Alpha", "Bravo"], target_stations=["Charlie", "Delta"])
    x = ev[0]
    assert x["target"].shape == (L, 2, 2) and (x["station_withheld"] == 1).all()
    assert list(x["station_row"]) == list(tiny_store["station_row"].values[2:])


def test_dropout_deterministic_by_seed(tiny_store) -> None:
    inits = valid_init_times(tiny_store, every_h=6)
    a = WindowSampler(tiny_store, inits, drop_prob=0.5, seed=11)
    b = WindowSampler(tiny_store, inits, drop_prob=0.5, seed=11)
    kept_a = np.array([a[i]["station_in_input"] for i in range(len(a))])
    kept_b = np.array([b[i]["station_in_input"] for i in range(len(b))])
    assert np.array_equal(kept_a, kept_b) and 0 < kept_a.mean() < 1 and (kept_a.sum(1) >= 1).all()
    a.set_epoch(1)
    assert not np.array_equal(kept_a, np.array([a[i]["station_in_input"] for i in range(len(a))]))
    c = WindowSampler(tiny_store, inits, drop_prob=0.5, seed=12)
    assert not np.array_equal(kept_a, np.array([c[i]["station_in_input"] for i in range(len(c))]))
    # the obs mask agrees with station_in_input (pm25 channel at each station's cell)
    x = b[5]
    rows, cols = tiny_store["station_row"].values, tiny_store["station_col"].values
    seen = x["obs_mask"][:, 0, rows, cols].max(axis=0)
    assert np.all(seen <= x["station_in_input"])


def test_calendar_local_time() -> None:
    t = np.array(["2021-01-01T16:00", "2021-01-02T04:00", "2021-07-02T16:00"], dtype="datetime64[ns]")
    cal = calendar_features(t, "+08:00")  # local: Sat 00:00, Sat 12:00, Sat 00:00
    assert cal.shape == (3, 5) and cal.dtype == np.float32
    assert np.allclose(cal[0, :2], [0, 1], atol=1e-6) and np.allclose(cal[1, :2], [0, -1], atol=1e-6)
    assert (cal[:, 4] == 1).all() and calendar_features(t, "UTC")[0, 4] == 0  # Friday in UTC
    assert abs(cal[2, 3] + 1) < 0.01  # early July: doy_cos ~ -1


def test_batched_items_equal_single_items(tiny_store) -> None:
    """`__getitems__` (the training loader's path) writes exactly what `__getitem__` returns, item by item,
    including gaps in the forcing and station drop-out."""
    ds = tiny_store.copy()
    t2m = ds["met_t2m"].values.copy()
    t2m[5:40, 2:4] = np.nan  # a gap in the weather
    ds["met_t2m"] = (ds["met_t2m"].dims, t2m, ds["met_t2m"].attrs)
    s = WindowSampler(ds, valid_init_times(ds, every_h=3), drop_prob=0.4, seed=3)
    idx = [0, 7, 3, len(s) - 1]
    batch = s.__getitems__(idx)
    items = [s[i] for i in idx]
    assert set(batch) == set(items[0])
    for k, v in batch.items():
        assert v.shape == (len(idx),) + np.shape(items[0][k]) and v.dtype == np.asarray(items[0][k]).dtype, k
        assert all(np.array_equal(v[j], items[j][k]) for j in range(len(idx))), k
    assert (batch["forcing_mask"] == 0).any() and (batch["station_in_input"] == 0).any()


def test_solar_zenith_geometry() -> None:
    """cos(zenith) at Beijing: ~cos(lat - 23.44) at the June solstice's solar noon (~04:14 UTC), ~cos(lat +
    23.44) in December, 0 at night; the noon of a point 15 degrees further east comes an hour earlier."""
    from features.calendar import solar_cos_zenith

    t = np.array(["2015-06-21T04:14", "2015-12-21T04:14", "2015-06-21T16:14"], dtype="datetime64[ns]")
    c = solar_cos_zenith(t, 116.4, 39.9)
    assert abs(c[0] - np.cos(np.deg2rad(39.9 - 23.44))) < 0.01
    assert abs(c[1] - np.cos(np.deg2rad(39.9 + 23.44))) < 0.01 and c[2] == 0
    day = np.arange("2015-06-21T00", "2015-06-22T00", dtype="datetime64[h]").astype("datetime64[ns]")
    assert solar_cos_zenith(day, 116.4, 39.9).argmax() == 4
    assert solar_cos_zenith(day, 131.4, 39.9).argmax() == 3


def test_sun_cosz_forcing_follows_the_window_times(tiny_store) -> None:
    from features.calendar import solar_cos_zenith

    t = tiny_store["time"].values
    init = t[60]
    s = WindowSampler(tiny_store, [init], forcing_vars=["met_t2m", "sun_cosz", "hour_sin"])
    x = s[0]
    want = solar_cos_zenith(init + np.arange(-H + 1, L + 1) * np.timedelta64(1, "h"),
                            float(tiny_store["lon"].mean()), float(tiny_store["lat"].mean()))
    assert np.allclose(x["forcing"][:, 1, 2, 2], want) and np.allclose(x["forcing"][:, 1, 0, 0], want)
    assert want.max() > 0.3 and (want == 0).sum() > 20  # days and nights inside the 96-h window


def test_input_distance_follows_the_inputs(tiny_store) -> None:
    """`input_distance_km` is the km to the nearest station whose values enter the sample: the store's distance
    field when every station is an input, larger at a withheld station's cell and at a station dropped from the
    sample, near zero only where a station reports."""
    from features.grid import Grid
    from features.regrid import distance_to_nearest_km

    g = Grid.from_json(tiny_store.attrs["grid"])
    lon, lat = tiny_store["station_lon"].values, tiny_store["station_lat"].values
    rows, cols = tiny_store["station_row"].values, tiny_store["station_col"].values
    inits = valid_init_times(tiny_store, every_h=6)
    statics = ["static_elevation", "input_distance_km"]
    full = WindowSampler(tiny_store, inits, static_vars=statics)[0]["static"][1]
    assert np.allclose(full, distance_to_nearest_km(g, lon, lat), atol=1e-5)
    three = WindowSampler(tiny_store, inits, static_vars=statics, input_stations=["Alpha", "Bravo", "Charlie"])
    d3 = three[0]["static"][1]
    assert np.allclose(d3, distance_to_nearest_km(g, lon[:3], lat[:3]), atol=1e-5)
    assert d3[rows[3], cols[3]] > 10 > full[rows[3], cols[3]] + 8  # Delta withheld: no station in its cell
    s = WindowSampler(tiny_store, inits, static_vars=statics, drop_prob=0.5, seed=3)
    dropped_seen = 0
    for i in range(len(s)):
        x = s[i]
        at = x["static"][1][rows, cols]
        assert np.array_equal(at < 2.2, x["station_in_input"] == 1), i  # half a 3-km cell's diagonal
        assert np.array_equal(x["static"][0], s[0]["static"][0])  # stored statics do not move
        dropped_seen += int((x["station_in_input"] == 0).sum())
    assert dropped_seen > 0
