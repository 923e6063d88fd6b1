"""GBT reference, same-sample summary and acceptance checks for `aqcast evaluate` (see training.evaluate).

The gradient-boosted-trees reference (`models.gbt.GBTReference`) is fitted on the training period at the
model's input stations (the stations whose history the deep model sees) and cached under
`$AQCAST_HOME/cache/` keyed by the data source, its provenance, the train period, the stations and the GBT
settings. It needs the point's own pollutant history, so it forecasts only at input stations; held-out
stations keep the IDW-persistence / pooled-climatology references.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np

HOUR = np.timedelta64(3600 * 10**9, "ns")
SUMMARY_LEADS = (24, 48, 72)
SIMPLE = ("persistence", "climatology", "blend")


def cache_dir() -> Path:
    return Path(os.environ.get("AQCAST_HOME", ".aqcast")).resolve() / "cache"


def train_window(ds, meta: dict[str, Any], t0: np.datetime64) -> tuple[np.datetime64, np.datetime64]:
    """Training period (UTC) from the model metadata, else the store's `train_period`, else all before t0;
    always ending before the first evaluated init (no look-ahead)."""
    import pandas as pd

    tw = meta.get("train_window")
    if not tw and ds.attrs.get("train_period"):
        tw = json.loads(ds.attrs["train_period"]) if isinstance(ds.attrs["train_period"], str) \
            else ds.attrs["train_period"]
    times = ds["time"].values.astype("datetime64[ns]")
    if tw:
        a, b = (np.datetime64(pd.Timestamp(x).tz_convert("UTC").tz_localize(None).to_datetime64(), "ns")
                if pd.Timestamp(x).tzinfo else np.datetime64(pd.Timestamp(x).to_datetime64(), "ns") for x in tw)
    else:
        a, b = times[0], t0 - HOUR
    return a, min(b, t0 - HOUR)


def _key(source: str, ds, train: tuple, stations: list[str], leads: int, kw: dict) -> str:
    prov = ds.attrs.get("provenance", "")
    try:
        prov = [s.get("sha256") for s in json.loads(prov).get("sources", [])]
    except (TypeError, ValueError, AttributeError):
        prov = str(prov)[:2000]
    gbt_src = Path(__file__).resolve().parents[1] / "models" / "gbt.py"
    code = hashlib.sha1(gbt_src.read_bytes()).hexdigest() if gbt_src.is_file() else ""
    blob = json.dumps({"source": str(Path(source).resolve()) if source else "", "prov": prov,
                       "train": [str(train[0]), str(train[1])], "stations": stations, "leads": leads,
                       "kw": sorted((k, str(v)) for k, v in kw.items()), "code": code}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def gbt_forecast(ds_p, meta: dict[str, Any], inits: np.ndarray, inputs: list[str], names: list[str],
                 n_l: int, t0: np.datetime64, source: str = "", gbt_kw: dict | None = None,
                 cache: str | Path | None = None, echo=print) -> tuple[np.ndarray, str]:
    """GBT [N, L, 2, 3, S] (S = `names`, NaN at stations not in `inputs`) for the inits (UTC) on the padded
    store `ds_p`; fitted at the input stations on the training period (or loaded from the cache)."""
    from models.gbt import GBTReference
    from training.baseline_report import init_indices, series_from_store

    kw = dict(gbt_kw or {})
    full = series_from_store(ds_p)
    ss = full.subset([full.stations.index(s) for s in inputs])
    train = train_window(ds_p, meta, t0)
    key = _key(source, ds_p, train, list(inputs), n_l, kw)
    path = Path(cache or cache_dir()) / f"gbt-{key}.pkl"
    tic = time.time()
    if path.is_file():
        with open(path, "rb") as f:
            g = pickle.load(f)
        fit = getattr(g, "fit_note", None)  # how it was fitted (caches written since round eighteen)
        how = f"{fit}, loaded from cache {path}" if fit else f"loaded from cache {path}"
    else:
        train_rows = (ss.times >= train[0]) & (ss.times <= train[1])
        tr_init = init_indices(ss, train[0], train[1], 1, n_l, valid_inside=True)[::3]
        if tr_init.size < 10:
            raise ValueError(f"too few training inits for the GBT reference ({tr_init.size})")
        echo(f"GBT reference: fitting on {tr_init.size} training inits at {len(inputs)} stations (about a minute "
             "on 2 cores; cached for the next run) ...")
        g = GBTReference(leads=n_l, **kw).fit(ss, train_rows, tr_init)
        g.fit_note = (f"fitted on {tr_init.size} training inits (every 3 h, all valid times inside "
                      f"{str(train[0])[:16]} .. {str(train[1])[:16]} UTC) in {time.time() - tic:.0f} s")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(g, f)
        tmp.replace(path)
        how = f"{g.fit_note}, cached {path}"
    echo(f"GBT reference {how}")
    idx = ((inits - ss.times[0]) // HOUR).astype(int)
    echo(f"GBT reference: predicting {idx.size} inits x {len(inputs)} stations ...")
    tic = time.time()
    p = g.predict(ss, idx)
    echo(f"GBT predicted {idx.size} inits x {len(inputs)} stations in {time.time() - tic:.0f} s")
    out = np.full(p.shape[:4] + (len(names),), np.nan, np.float32)
    for j, s in enumerate(inputs):
        out[..., names.index(s)] = p[..., j]
    return out, how


def ref_mae(pred50: np.ndarray, ref50: np.ndarray, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MAE [L, 2] of the reference and n [L, 2] on the deep model's samples (deep, ref and obs all finite)."""
    from training.metrics import basic_scores

    o = np.where(np.isfinite(pred50) & np.isfinite(ref50), obs, np.nan)
    sc = basic_scores(ref50, o)
    return sc["mae"], sc["n"]


BLOCK_H = 168  # the margin's bootstrap resamples weeks of inits: one weather regime's errors travel together


def block_inits(every_h: int) -> int:
    """Inits per bootstrap block of about BLOCK_H hours at one init every `every_h` hours."""
    return max(1, BLOCK_H // every_h)


def margin_interval(pred50: np.ndarray, ref50: np.ndarray, obs: np.ndarray, block: int, n_boot: int = 1000,
                    seed: int = 0, level: float = 0.90) -> np.ndarray:
    """`level` interval [2, L, 2] of the margin 1 - MAE(pred) / MAE(ref) by lead and species, by a block bootstrap
    over the inits ([N, L, 2, S] arrays in init order, obs NaN-missing; blocks of `block` consecutive inits keep
    the days' and weather regimes' correlation), on the samples where pred, ref and obs are all finite."""
    ok = np.isfinite(pred50) & np.isfinite(ref50) & np.isfinite(obs)
    e_p = np.where(ok, np.abs(pred50 - obs), 0.0).sum(3)
    e_r = np.where(ok, np.abs(ref50 - obs), 0.0).sum(3)
    n_blk = max(1, int(np.ceil(len(obs) / max(1, block))))
    cut = np.arange(n_blk) * max(1, block)
    bp, br = np.add.reduceat(e_p, cut, axis=0), np.add.reduceat(e_r, cut, axis=0)
    draws = np.random.default_rng(seed).integers(0, n_blk, (n_boot, n_blk))
    with np.errstate(invalid="ignore", divide="ignore"):
        m = 1 - bp[draws].sum(1) / br[draws].sum(1)
    q = 100 * (1 - level) / 2
    return np.nanpercentile(m, [q, 100 - q], axis=0)


def summary(pred50: np.ndarray, obs: np.ndarray, refs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """MAE [L, 2] of the deep model and every reference on the common samples (all forecasts and obs finite),
    plus 'n' [L, 2]."""
    from training.metrics import basic_scores

    ok = np.isfinite(pred50) & np.isfinite(obs)
    for r in refs.values():
        ok &= np.isfinite(r)
    o = np.where(ok, obs, np.nan)
    out = {"deep": basic_scores(pred50, o)["mae"]}
    for k, r in refs.items():
        out[k] = basic_scores(r, o)["mae"]
    out["n"] = basic_scores(pred50, o)["n"]
    return out


def acceptance(results: dict, summ: dict) -> list[tuple[str, bool | None, str]]:
    """The issue's acceptance checks -> [(check, passed (None = cannot be computed), detail)]."""
    rows: list[tuple[str, bool | None, str]] = []
    tr, ho = results.get("train_stations", {}), results.get("held_out_stations", {})
    st = summ.get("train_stations", {})
    n_l = next(iter(results.values()))["mae"].shape[0] if results else 72
    leads = [ld for ld in SUMMARY_LEADS if ld <= n_l] or [n_l]
    lt = "/".join(map(str, leads)) + " h"
    for i, sp in enumerate(("pm25", "o3")):
        if "skill_vs_gbt" in tr:
            v = [tr["skill_vs_gbt"][ld - 1, i] for ld in leads]
            det = "skill " + " / ".join(f"{x:+.2f}" for x in v)
            if "gbt_margin_ci" in st:  # [2, L, 2] from `margin_interval`
                ci = st["gbt_margin_ci"]
                det += (f" (90 % interval, {BLOCK_H // 24}-day blocks: " + " / ".join(
                    f"{ci[0, ld - 1, i]:+.2f}…{ci[1, ld - 1, i]:+.2f}" for ld in leads) + ")")
            rows.append((f"{sp}: deep MAE ≥ 10 % below GBT at {lt} (training stations)",
                         bool(np.all(np.array(v) >= 0.10)), det))
        else:
            rows.append((f"{sp}: deep MAE ≥ 10 % below GBT", None, "GBT not run"))
    for i, sp in enumerate(("pm25", "o3")):
        have = [k for k in SIMPLE if k in st]
        if have:
            v = []
            for ld in leads:
                best = min(st[k][ld - 1, i] for k in have)
                v.append(1 - st["deep"][ld - 1, i] / best)
            rows.append((f"{sp}: deep MAE ≥ 40 % below the best simple baseline ({'/'.join(have)}) at {lt}",
                         bool(np.all(np.array(v) >= 0.40)), "skill " + " / ".join(f"{x:+.2f}" for x in v)))
    if tr and ho:
        for i, sp in enumerate(("pm25", "o3")):
            r = [ho["mae"][ld - 1, i] / tr["mae"][ld - 1, i] for ld in leads]
            rows.append((f"{sp}: held-out MAE within 15 % of training-station MAE at {lt}",
                         bool(np.all(np.array(r) <= 1.15)), "ratio " + " / ".join(f"{x:.2f}" for x in r)))
    h = m = f = 0.0
    parts = []
    for g, sc in results.items():
        if "daily_pm25_gt75_hits" in sc:
            hh, mm, ff = (float(sc[f"daily_pm25_gt75_{k}"][0]) for k in ("hits", "misses", "false_alarms"))
            h, m, f = h + hh, m + mm, f + ff
            parts.append(f"{g} {hh / max(hh + mm + ff, 1):.2f}")
    if h + m + f > 0:
        csi = h / (h + m + f)
        rows.append(("daily-mean PM2.5 > 75 CSI day +1 ≥ 0.55 (all stations)", bool(csi >= 0.55),
                     f"CSI {csi:.2f} ({', '.join(parts)})"))
    for g, sc in results.items():
        c = sc["coverage_p10_p90"]
        ok = bool(np.all((c >= 0.75) & (c <= 0.85)))
        det = ", ".join(f"{sp} {np.nanmin(c[:, i]):.2f}–{np.nanmax(c[:, i]):.2f}"
                        for i, sp in enumerate(("pm25", "o3")))
        rows.append((f"P10–P90 coverage within 75–85 % at every lead ({g})", ok, det))
    return rows


def training_budget(meta: dict[str, Any]) -> str | None:
    """'N epochs, S steps, W s' of the model's MLflow run (None when unavailable)."""
    rid = meta.get("run_id")
    if not rid:
        return None
    try:
        import mlflow

        from training.tracking import tracking_uri

        mlflow.set_tracking_uri(tracking_uri())
        r = mlflow.get_run(rid)
    except Exception:  # noqa: BLE001 - informational only
        return None
    m, p = r.data.metrics, r.data.params
    ep = int(m["epoch"]) + 1 if "epoch" in m else None
    wall = (r.info.end_time - r.info.start_time) / 1000 if r.info.end_time else None
    bits = [f"{ep} epochs" if ep else None, f"{int(m['global_step'])} optimizer steps" if "global_step" in m
            else None, f"{m['train_seconds']:.0f} s training" if "train_seconds" in m else None,
            f"{wall:.0f} s run wall time" if wall else None]
    lim = [f"max_epochs {p['optim.max_epochs']}" if "optim.max_epochs" in p else None,
           f"max_minutes {p['optim.max_minutes']}" if "optim.max_minutes" in p else None,
           f"batch {p['optim.batch_size']}" if "optim.batch_size" in p else None,
           f"max_train_samples {p['data.max_train_samples']}/epoch" if "data.max_train_samples" in p else None,
           f"{p['optim.num_threads']} CPU threads" if "optim.num_threads" in p else None]
    return (f"run {meta.get('run_name', '')} ({rid}): " + ", ".join(b for b in bits if b)
            + " (limits: " + ", ".join(x for x in lim if x) + ")")
