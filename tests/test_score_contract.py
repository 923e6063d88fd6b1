"""docs/scorecard/score_contract.py: scores a backtest-contract CSV against the raw station files."""

import numpy as np
import pandas as pd
from conftest import load_script, write_uci_dir


def _load():
    return load_script("score_contract")


def _raw(d):
    """The raw station rows of a UCI-layout directory with their local time."""
    raw = pd.concat(pd.read_csv(f) for f in sorted(d.glob("PRSA_*.csv")))
    raw["local"] = pd.to_datetime(raw[["year", "month", "day", "hour"]])
    return raw


def test_scores_p50_error_and_band_by_the_contracts_columns(tmp_path):
    d = write_uci_dir(tmp_path / "data", n_days=4)
    raw = _raw(d)
    rows = []
    for station, g in raw.groupby("station"):
        g = g.set_index("local")
        for init in ("2021-01-02T00:00", "2021-01-03T00:00"):
            for lead in (1, 2):
                for sp, col in (("pm25", "PM2.5"), ("o3", "O3")):
                    obs = g.loc[pd.Timestamp(init) + pd.Timedelta(hours=lead), col]
                    if not np.isfinite(obs):
                        continue
                    inside = lead == 1  # lead 1: band around obs; lead 2: band entirely above it
                    p50 = obs + 2.0 if sp == "pm25" else obs - 3.0
                    lo, hi = (obs - 1, obs + 5) if inside else (obs + 1, obs + 6)
                    rows.append({"init_time": init + "+08:00", "lead_hours": lead, "point_id": station,
                                 "species": sp, "p10": lo, "p50": p50, "p90": hi})
    fc = tmp_path / "forecasts.csv"
    pd.DataFrame(rows).to_csv(fc, index=False)
    held = sorted(raw["station"].unique())[:1]
    t = _load().score(str(fc), str(d), held, leads=(1, 2))
    assert set(t["group"]) == {"held-out points", "stations in DIR"}
    for _, r in t.iterrows():
        want = 2.0 if r["species"] == "pm25" else 3.0
        assert r["MAE 1 h"] == want and r["MAE 2 h"] == want
        assert r["P10-P90 coverage"] == "0.00-1.00"  # lead 2 always outside, lead 1 always inside


def test_member_mean_is_log1p_space_and_refuses_other_rows(tmp_path):
    import pytest

    mod = _load()
    base = {"init_time": ["2021-01-02T00:00+08:00"] * 2, "lead_hours": [1, 2], "point_id": ["A", "A"],
            "species": ["pm25", "pm25"]}
    pd.DataFrame({**base, "p10": [0.0, 1.0], "p50": [3.0, 3.0], "p90": [8.0, 8.0]}).to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame({**base, "p10": [0.0, 1.0], "p50": [15.0, 15.0], "p90": [8.0, 8.0]}).to_csv(tmp_path / "b.csv", index=False)
    m = mod.member_mean([str(tmp_path / "a.csv"), str(tmp_path / "b.csv")])
    np.testing.assert_allclose(m["p50"], [7.0, 7.0])  # expm1(mean(log 4, log 16)) = 7
    np.testing.assert_allclose(m["p90"], [8.0, 8.0])
    pd.DataFrame({**base, "lead_hours": [1, 3], "p10": 0.0, "p50": 1.0, "p90": 2.0}).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(ValueError, match="same"):
        mod.member_mean([str(tmp_path / "a.csv"), str(tmp_path / "c.csv")])


def test_by_month_groups_by_the_month_the_init_was_issued(tmp_path):
    d = write_uci_dir(tmp_path / "data", n_days=40)
    rows = []
    for station, g in _raw(d).groupby("station"):
        g = g.set_index("local")
        for init in ("2021-01-31T00:00", "2021-02-01T00:00"):  # the first one's leads are valid in February too
            for lead in (1, 24):
                obs = g.loc[pd.Timestamp(init) + pd.Timedelta(hours=lead), "O3"]
                lo, hi = (obs - 1, obs + 1) if init.startswith("2021-01") else (obs + 1, obs + 2)
                rows.append({"init_time": init + "+08:00", "lead_hours": lead, "point_id": station,
                             "species": "o3", "p10": lo, "p50": obs + 4.0, "p90": hi})
    fc = tmp_path / "forecasts.csv"
    pd.DataFrame(rows).to_csv(fc, index=False)
    mod = _load()
    t = mod.by_month(mod.matched(str(fc), str(d), [])).set_index("month")
    assert list(t.index) == ["2021-01", "2021-02"] and (t["n"] == 6).all()
    assert t.loc["2021-01", "coverage"] == 1.0 and t.loc["2021-02", "coverage"] == 0.0 and (t["MAE"] == 4.0).all()


def test_by_point_sets_each_point_beside_its_own_persistence(tmp_path):
    d = write_uci_dir(tmp_path / "data", n_days=4)
    rows, want = [], {}
    for station, g in _raw(d).groupby("station"):
        g = g.set_index("local")
        init = pd.Timestamp("2021-01-02T00:00")
        for lead in (1, 24):
            obs, at_init = g.loc[init + pd.Timedelta(hours=lead), "PM2.5"], g.loc[init, "PM2.5"]
            rows.append({"init_time": "2021-01-02T00:00+08:00", "lead_hours": lead, "point_id": station,
                         "species": "pm25", "p10": 0.0, "p50": obs + 5.0, "p90": 1e3})
            want[(station, lead)] = abs(at_init - obs)
    fc = tmp_path / "forecasts.csv"
    pd.DataFrame(rows).to_csv(fc, index=False)
    mod = _load()
    t = mod.by_point(mod.matched(str(fc), str(d), []), leads=(1, 24)).set_index("point")
    assert sorted(t.index) == sorted({s for s, _ in want})
    for (station, lead), w in want.items():
        assert t.loc[station, f"MAE {lead} h"] == 5.0
        assert t.loc[station, f"persistence {lead} h"] == round(float(w), 1)
