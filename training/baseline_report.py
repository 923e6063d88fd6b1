"""Reference scores the deep model must beat: baselines + GBT at stations, by lead, on a validation period.

    python -m training.baseline_report --store /tmp/aqcast_beijing.zarr            # or --data DIR
        [--train-from 2013-03-01T00:00+08:00 --train-to 2015-02-28T23:00+08:00]
        [--valid-from 2015-03-01T00:00+08:00 --valid-to 2016-02-29T23:00+08:00] [--every 6] [--no-gbt]

Training inits have all valid times inside the training period; validation inits every `--every` hours
with their init in the validation period (valid times up to 72 h later, when present). Prints MAE by
lead (24/48/72 h and the mean over 1..72) for pm25 and o3, plus P10-P90 coverage; `--out` writes the table.

Reference (Beijing, 10 stations, valid year 2015-03..2016-02, inits every 6 h, MAE ug m-3 at 24/48/72 h;
GBT with observed = perfect meteorology, ~8 min on one core):
  pm25: persistence 50.9/66.3/72.2, climatology 61.5/61.5/61.5, blend 48.9/53.9/54.3, GBT 28.1/30.8/32.4
  o3:   persistence 27.4/32.1/34.0, climatology 28.4/28.4/28.4, blend 25.7/27.8/28.4, GBT 18.8/20.2/20.6
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from models.stations import StationSeries

POLLUTANTS = ("pm25", "pm10", "so2", "no2", "co", "o3")


def to_utc(ts: str) -> np.datetime64:
    """ISO 8601 with offset (or naive = UTC) -> datetime64[ns] UTC without tz."""
    t = pd.Timestamp(ts)
    if t.tzinfo is not None:
        t = t.tz_convert("UTC").tz_localize(None)
    return np.datetime64(t.to_datetime64(), "ns")


def series_from_store(ds) -> StationSeries:
    """Station pollutants (`stn_*`) plus grid met sampled at the station cells from a feature store."""
    rows, cols = ds["station_row"].values.astype(int), ds["station_col"].values.astype(int)
    vals = {p: ds[f"stn_{p}"].transpose("time", "station").values.astype(float)
            for p in POLLUTANTS if f"stn_{p}" in ds}
    for name in ds.data_vars:
        if name.startswith("met_") and ds[name].dims == ("time", "y", "x"):
            arr = ds[name].values
            vals[name[4:]] = arr[:, rows, cols].astype(float)
    offset = _offset_hours(ds.attrs.get("source_utc_offset", "+08:00"))
    return StationSeries(ds["time"].values.astype("datetime64[ns]"), [str(s) for s in ds["station"].values],
                         ds["station_lon"].values.astype(float), ds["station_lat"].values.astype(float), vals,
                         offset)


def series_from_stations(ds) -> StationSeries:
    """From `features.readers.stations.read_stations` output (station weather = perfect met)."""
    vals = {v: ds[v].transpose("time", "station").values.astype(float) for v in ds.data_vars
            if ds[v].dims == ("station", "time") or ds[v].dims == ("time", "station")}
    offset = _offset_hours(ds.attrs.get("source_utc_offset", "+08:00"))
    return StationSeries(ds["time"].values.astype("datetime64[ns]"), [str(s) for s in ds["station"].values],
                         ds["lon"].values.astype(float), ds["lat"].values.astype(float), vals, offset)


def _offset_hours(off: str | float) -> float:
    if isinstance(off, (int, float)):
        return float(off)
    s = str(off).strip()
    sign = -1.0 if s.startswith("-") else 1.0
    hh, _, mm = s.lstrip("+-").partition(":")
    return sign * (float(hh or 0) + float(mm or 0) / 60.0)


def load_series(store: str | None = None, data: str | None = None) -> StationSeries:
    """StationSeries from a store path or a raw data directory."""
    if store:
        from features.store import open_store

        return series_from_store(open_store(store))
    from features.readers.stations import read_stations

    return series_from_stations(read_stations(data))


def init_indices(ss: StationSeries, t0: np.datetime64, t1: np.datetime64, every: int, leads: int = 72,
                 valid_inside: bool = False, history: int = 24) -> np.ndarray:
    """Init indices with init in [t0, t1] stepping `every` h (and init+leads <= t1 when `valid_inside`)."""
    t = ss.times
    ok = (t >= t0) & (t <= t1)
    idx = np.flatnonzero(ok)
    idx = idx[idx >= history]
    if valid_inside:
        idx = idx[t[np.minimum(idx + leads, t.size - 1)] <= t1]
        idx = idx[idx + leads < t.size]
    else:
        idx = idx[idx + 1 < t.size]
    return idx[(idx - idx[0]) % every == 0] if idx.size else idx


def run_report(ss: StationSeries, train: tuple[np.datetime64, np.datetime64],
               valid: tuple[np.datetime64, np.datetime64], every: int = 6, gbt: bool = True,
               leads: int = 72, gbt_kw: dict | None = None, verbose: bool = True) -> tuple[pd.DataFrame, dict]:
    """Fit baselines (+GBT) on `train`, score on `valid`; returns (table, predictions dict)."""
    from models.baselines import BaselineSuite, observed
    from training.metrics import basic_scores, coverage

    y = ss.species()
    train_rows = (ss.times >= train[0]) & (ss.times <= train[1])
    tr_init = init_indices(ss, train[0], train[1], 1, leads, valid_inside=True)
    va_init = init_indices(ss, valid[0], valid[1], every, leads)
    t0 = time.time()
    suite = BaselineSuite(leads=leads, utc_offset_h=ss.utc_offset_h).fit(y, ss.times, train_rows, tr_init)
    preds = suite.predict(y, ss.times, va_init)
    if verbose:
        print(f"baselines fitted ({len(tr_init)} train inits, {len(va_init)} valid inits) "
              f"in {time.time() - t0:.1f}s", flush=True)
    if gbt:
        from models.gbt import GBTReference

        t0 = time.time()
        g = GBTReference(leads=leads, **(gbt_kw or {})).fit(ss, train_rows, tr_init[::3])
        preds["gbt"] = g.predict(ss, va_init)
        if verbose:
            print(f"GBT fitted and predicted in {time.time() - t0:.1f}s", flush=True)
    obs = observed(y, va_init, leads)
    rows = []
    for name, p in preds.items():
        sc = basic_scores(p[:, :, :, 1], obs)
        cov = coverage(p, obs)
        for i, sp in enumerate(("pm25", "o3")):
            r = {"model": name, "species": sp}
            for ld in (1, 6, 24, 48, 72):
                if ld <= leads:
                    r[f"MAE@{ld}h"] = sc["mae"][ld - 1, i]
            r["MAE mean 1-72"] = np.nanmean(sc["mae"][:, i])
            r["RMSE@24h"] = sc["rmse"][min(23, leads - 1), i]
            r["cov80 mean"] = np.nanmean(cov[:, i])
            rows.append(r)
    table = pd.DataFrame(rows).sort_values(["species", "model"]).reset_index(drop=True)
    return table, {"preds": preds, "obs": obs, "init_idx": va_init}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--store")
    src.add_argument("--data")
    ap.add_argument("--train-from", default="2013-03-01T00:00+08:00")
    ap.add_argument("--train-to", default="2015-02-28T23:00+08:00")
    ap.add_argument("--valid-from", default="2015-03-01T00:00+08:00")
    ap.add_argument("--valid-to", default="2016-02-29T23:00+08:00")
    ap.add_argument("--every", type=int, default=6)
    ap.add_argument("--no-gbt", action="store_true")
    ap.add_argument("--gbt-quantile-mode", default="residual", choices=["residual", "models"])
    ap.add_argument("--out", help="write the table (markdown) here, and a .json beside it")
    a = ap.parse_args(argv)
    ss = load_series(a.store, a.data)
    table, _ = run_report(ss, (to_utc(a.train_from), to_utc(a.train_to)),
                          (to_utc(a.valid_from), to_utc(a.valid_to)), a.every, not a.no_gbt,
                          gbt_kw={"quantile_mode": a.gbt_quantile_mode})
    md = table.to_markdown(index=False, floatfmt=".3g") if _has_tabulate() else table.to_string(index=False)
    print(md)
    if a.out:
        Path(a.out).write_text(md + "\n")
        Path(a.out).with_suffix(".json").write_text(json.dumps(table.to_dict(orient="records"), indent=1))


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401

        return True
    except ImportError:
        return False


if __name__ == "__main__":
    main()
