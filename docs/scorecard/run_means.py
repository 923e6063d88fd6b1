"""Means of separately trained models: does averaging whole training runs beat the members inside one?

    AQCAST_HOME=… python docs/scorecard/run_means.py --models models:/aqcast/1 models:/aqcast/4 … --store STORE
        [--every 6] [--from 2015-03-01T00:00+08:00] [--to 2016-02-29T23:00+08:00]

Every model forecasts the same inits (every `--every` h) at the input stations; each subset of the models is
scored by the mean of their P50s in log1p space (as `AQEnsemble` averages its members), beside the GBT reference
on the same (init, lead, station) samples (fitted on the training period or read from $AQCAST_HOME/cache), with
the 90 % block-bootstrap interval (blocks of 7 days of inits) of the 24-h margin over it.
"""
from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

LEADS_SHOWN = (1, 24, 48, 72)


def log_mean(p50s: list[np.ndarray]) -> np.ndarray:
    """The P50 of an equal-weight mean of forecasts in log1p space (negative values clipped to 0 first)."""
    return np.expm1(np.mean([np.log1p(np.maximum(p, 0)) for p in p50s], axis=0))


def main() -> None:
    # script_inputs: this folder, first on sys.path when run as a script
    from script_inputs import add_period, at_input_stations, gbt_p50, load

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--every", type=int, default=6, help="hours between inits")
    add_period(ap)
    a = ap.parse_args()
    from training import evaluate as ev
    from training.evaluate_gbt import block_inits, margin_interval
    from training.metrics import basic_scores, mae_skill

    preds = []
    for uri in a.models:
        a.model = uri
        net, meta, ds, t0, t1 = load(a)
        inits = ev.init_times(t0, t1, a.every)
        tic = time.time()
        q, obs, names, inputs = at_input_stations(net, meta, ds, inits)
        preds.append(q[:, :, :, 1])
        print(f"{uri}: {len(inits)} inits in {time.time() - tic:.0f} s", flush=True)
    gbt = gbt_p50(ds, meta, inits, inputs, names, preds[0].shape[1], t0, a.store)
    obs = np.where(np.isfinite(gbt), obs, np.nan)  # the samples the GBT forecasts too
    print(f"\n{len(inits)} inits every {a.every} h; MAE ug m-3 at leads {' / '.join(map(str, LEADS_SHOWN))}, "
          "margin over the GBT at 24 / 48 / 72 h, and its 90 % interval at 24 h")
    print("| forecast | PM2.5 | vs GBT % | 24-h interval | O3 | vs GBT % | 24-h interval |\n|---|---|---|---|---|---|---|")

    def row(name: str, p50: np.ndarray, interval: bool = True) -> None:
        m, sk = basic_scores(p50, obs)["mae"], mae_skill(p50, gbt, obs)
        iv = margin_interval(p50, gbt, obs, block=block_inits(a.every)) if interval else None
        cells = []
        for s in (0, 1):
            cells += [" / ".join(f"{m[lead - 1, s]:.2f}" for lead in LEADS_SHOWN),
                      " / ".join(f"{100 * sk[lead - 1, s]:.1f}" for lead in LEADS_SHOWN[1:]),
                      "" if iv is None else f"[{100 * iv[0, 23, s]:.0f}, {100 * iv[1, 23, s]:.0f}]"]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)

    row("GBT reference", gbt, interval=False)
    tags = [uri.rsplit("/", 1)[-1] for uri in a.models]
    for k in range(1, len(preds) + 1):
        for subset in itertools.combinations(range(len(preds)), k):
            row("mean of " + " + ".join(tags[i] for i in subset), log_mean([preds[i] for i in subset]))


if __name__ == "__main__":
    main()
