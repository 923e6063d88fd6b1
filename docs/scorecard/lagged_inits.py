"""Lagged-init averaging: does the mean of the forecasts issued at t, t-1 h, … t-K h beat the one issued at t?

    AQCAST_HOME=… python docs/scorecard/lagged_inits.py --model models:/aqcast/1 --store STORE [--lags 3]
        [--every 30] [--from 2015-03-01T00:00+08:00] [--to 2016-02-29T23:00+08:00]

For each init t (every `--every` h, so that 30 h cycles through 00/06/12/18 UTC) the model forecasts from t - k h,
k = 0 … K, with the pollutant observations up to t - k only; the forecast of t - k for lead l + k is the lagged
member's forecast for lead l (leads past 72 - k have fewer members). The P50s are averaged in log1p space, with
equal weights or weights 0.7^k. Scored at the input stations against the observations, beside the GBT reference
on the same (init, lead, station) samples (`training.evaluate_gbt`, fitted on the training period or read from
$AQCAST_HOME/cache), with a 90 % block-bootstrap interval (blocks of 7 days of inits) of the margin over the GBT.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

LEADS_SHOWN = (1, 6, 24, 48, 72)


def lagged_p50(preds: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """preds[k]: [N, L, 2, 3, S] issued k h early -> the weighted log1p-space mean P50 [N, L, 2, S]."""
    n_l = preds[0].shape[1]
    num = np.zeros(preds[0][:, :, :, 1].shape)
    den = np.zeros((1, n_l, 1, 1))
    for k, (p, w) in enumerate(zip(preds, weights, strict=True)):
        num[:, : n_l - k] += w * np.log1p(np.maximum(p[:, k:, :, 1], 0))
        den[:, : n_l - k] += w
    return np.expm1(num / den)


def main() -> None:
    # script_inputs: this folder, first on sys.path when run as a script
    from script_inputs import add_period, at_input_stations, gbt_p50, load

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--lags", type=int, default=3)
    ap.add_argument("--every", type=int, default=30, help="hours between inits")
    add_period(ap)
    a = ap.parse_args()
    from training import evaluate as ev
    from training.evaluate_gbt import block_inits, margin_interval
    from training.metrics import basic_scores, mae_skill

    net, meta, ds, t0, t1 = load(a)
    inits = ev.init_times(t0 + a.lags * ev.HOUR, t1, a.every)
    preds, obs = [], None
    for k in range(a.lags + 1):
        tic = time.time()
        q, o, names, inputs = at_input_stations(net, meta, ds, inits - k * ev.HOUR)
        preds.append(q)
        if k == 0:
            obs = o
        print(f"issued {k} h early: {len(inits)} inits in {time.time() - tic:.0f} s", flush=True)
    n_l = preds[0].shape[1]
    gbt = gbt_p50(ds, meta, inits, inputs, names, n_l, t0, a.store)
    obs = np.where(np.isfinite(gbt), obs, np.nan)  # the samples the GBT forecasts too

    def mae(p50: np.ndarray) -> np.ndarray:
        return basic_scores(p50, obs)["mae"]

    rows = {"GBT reference": mae(gbt), "issued at t (k = 0)": mae(preds[0][:, :, :, 1])}
    for kk in range(1, a.lags + 1):
        for label, w in (("equal", lambda k: 1.0), ("0.7^k", lambda k: 0.7 ** k)):
            rows[f"mean of k = 0..{kk}, {label}"] = mae(lagged_p50(preds[: kk + 1], [w(k) for k in range(kk + 1)]))
    print(f"\n{len(inits)} inits every {a.every} h, {int(np.isfinite(obs).sum())} samples; MAE ug m-3 at leads "
          + " / ".join(map(str, LEADS_SHOWN)))
    print("| forecast | PM2.5 | O3 |\n|---|---|---|")
    for name, m in rows.items():
        cells = [" / ".join(f"{m[lead - 1, s]:.2f}" for lead in LEADS_SHOWN) for s in (0, 1)]
        print(f"| {name} | {cells[0]} | {cells[1]} |")
    iv = margin_interval(preds[0][:, :, :, 1], gbt, obs, block=block_inits(a.every))
    point = mae_skill(preds[0][:, :, :, 1], gbt, obs)
    print("\nmargin of k = 0 over the GBT [90 % block-bootstrap interval, 7-day blocks]")
    for s, sp in enumerate(("PM2.5", "O3")):
        print(f"{sp}: " + "; ".join(f"{lead} h {100 * point[lead - 1, s]:.0f} % [{100 * iv[0, lead - 1, s]:.0f}, "
                                    f"{100 * iv[1, lead - 1, s]:.0f}]" for lead in LEADS_SHOWN[1:]))


if __name__ == "__main__":
    main()
