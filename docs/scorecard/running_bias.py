"""Running bias correction (MOS-style): does removing each station's recent forecast error help, and whom?

    AQCAST_HOME=… python docs/scorecard/running_bias.py --model models:/aqcast/1 --store STORE [--every 6]
        [--days 3 7 14 30] [--shrink 0.5] [--from 2015-03-01T00:00+08:00] [--to 2016-02-29T23:00+08:00]

Operational air-quality centres post-process station forecasts with the errors of the forecasts that have
already verified there (e.g. a Kalman-filter bias correction). Here, causally: the forecast issued at init t for
lead l at station s is shifted in log1p space by `shrink` × the mean log error of the same lead at s over the
inits of the last `days` days whose valid time t' + l is at or before t (only observations up to t are used).
The same correction is applied to the deep model and to the GBT reference, scored on the same (init, lead,
station) samples at the input stations. The settings are declared here, not fitted on the year scored.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

LEADS_SHOWN = (1, 24, 48, 72)


def running_log_bias(p50: np.ndarray, obs: np.ndarray, every_h: int, days: int, shrink: float,
                     min_count: int = 4) -> np.ndarray:
    """p50, obs [N, L, 2, S] for inits every `every_h` h -> p50 shifted by `shrink` × the mean log1p error of
    the same lead and station over the inits of the last `days` days that had verified by each init."""
    lp = np.log1p(np.clip(p50, 0, None))
    err = np.log1p(np.clip(obs, 0, None)) - lp
    fin = np.isfinite(err)
    zero = np.zeros((1,) + err.shape[1:])
    cs = np.concatenate([zero, np.cumsum(np.where(fin, err, 0.0), axis=0)])  # [N + 1, L, 2, S]
    cc = np.concatenate([zero, np.cumsum(fin, axis=0)])
    n, n_l = p50.shape[:2]
    out = np.empty_like(lp)
    k = days * 24 // every_h
    for lead in range(1, n_l + 1):
        lag = -(-lead // every_h)  # inits m <= i - lag have verified lead `lead` by init i
        hi = np.clip(np.arange(n) - lag + 1, 0, n)
        lo = np.clip(hi - k, 0, n)
        s = cs[hi, lead - 1] - cs[lo, lead - 1]
        c = cc[hi, lead - 1] - cc[lo, lead - 1]
        corr = np.where(c >= min_count, s / np.maximum(c, 1), 0.0)
        out[:, lead - 1] = lp[:, lead - 1] + shrink * corr
    return np.expm1(out)


def main() -> None:
    # script_inputs: this folder, first on sys.path when run as a script
    from script_inputs import add_period, at_input_stations, gbt_p50, load

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--every", type=int, default=6, help="hours between inits")
    ap.add_argument("--days", type=int, nargs="+", default=[3, 7, 14, 30])
    ap.add_argument("--shrink", type=float, default=0.5)
    add_period(ap)
    a = ap.parse_args()
    from training import evaluate as ev
    from training.evaluate_gbt import block_inits, margin_interval
    from training.metrics import basic_scores, mae_skill

    net, meta, ds, t0, t1 = load(a)
    inits = ev.init_times(t0, t1, a.every)
    tic = time.time()
    q, obs, names, inputs = at_input_stations(net, meta, ds, inits)
    print(f"deep model: {len(inits)} inits in {time.time() - tic:.0f} s", flush=True)
    deep = q[:, :, :, 1]
    gbt = gbt_p50(ds, meta, inits, inputs, names, deep.shape[1], t0, a.store)
    scored = np.where(np.isfinite(gbt) & np.isfinite(deep), obs, np.nan)  # the samples both forecast

    def row(name: str, d: np.ndarray, t: np.ndarray) -> str:
        md, mt = basic_scores(d, scored)["mae"], basic_scores(t, scored)["mae"]
        sk = mae_skill(d, t, scored)
        cells = []
        for s in (0, 1):
            cells.append(" / ".join(f"{md[ld - 1, s]:.2f}" for ld in LEADS_SHOWN))
            cells.append(" / ".join(f"{mt[ld - 1, s]:.2f}" for ld in LEADS_SHOWN))
            cells.append(" / ".join(f"{100 * sk[ld - 1, s]:.0f} %" for ld in LEADS_SHOWN[1:]))
        return f"| {name} | " + " | ".join(cells) + " |"

    print(f"\n{len(inits)} inits every {a.every} h, input stations; MAE ug m-3 at leads "
          + " / ".join(map(str, LEADS_SHOWN)) + "; margin = deep below GBT at 24 / 48 / 72 h")
    print("| correction | PM2.5 deep | PM2.5 GBT | PM2.5 margin | O3 deep | O3 GBT | O3 margin |")
    print("|---|---|---|---|---|---|---|")
    print(row("none", deep, gbt))
    first = None
    for days in a.days:
        dc = running_log_bias(deep, obs, a.every, days, a.shrink)
        tc = running_log_bias(gbt, obs, a.every, days, a.shrink)
        print(row(f"{days} days, shrink {a.shrink}", dc, tc))
        first = first or (dc, tc, days)
    for label, d, t in (("none", deep, gbt), (f"{first[2]} days", first[0], first[1])):
        iv = margin_interval(d, t, scored, block=block_inits(a.every))
        pt = mae_skill(d, t, scored)
        print(f"margin [90 % interval], correction {label}: " + "; ".join(
            f"{sp} 24 h {100 * pt[23, s]:.0f} % [{100 * iv[0, 23, s]:.0f}, {100 * iv[1, 23, s]:.0f}]"
            for s, sp in enumerate(("PM2.5", "O3"))))


if __name__ == "__main__":
    main()
