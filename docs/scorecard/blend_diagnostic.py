"""Diagnostic, not a forecast: what do the trees or the climatology know that the network does not?

    AQCAST_HOME=… python docs/scorecard/blend_diagnostic.py --model models:/aqcast/1 --store STORE
        [--every 6] [--from 2015-03-01T00:00+08:00] [--to 2016-02-29T23:00+08:00]

At the input stations, on the same (init, lead, station) samples as the GBT reference, the network's P50 is
mixed in log1p space with the trees' P50 (weight w) and with the month x local-hour climatology of each station
and of the pooled stations (fitted on the training period), and the MAE by lead is printed with the
correlation of the two models' errors. A mix that lowers the MAE says the other forecast carries information
the network misses; none of these mixes is the deep model, and none is shipped (the trees cannot forecast a
cell without a station).
"""
from __future__ import annotations

import numpy as np

LEADS_SHOWN = (1, 6, 24, 48, 72)
WEIGHTS = (0.1, 0.2, 0.3, 0.5)


def log_mix(a: np.ndarray, b: np.ndarray, w: float) -> np.ndarray:
    """expm1((1 - w) log1p(a) + w log1p(b)), negative values clipped to 0 first."""
    return np.expm1((1 - w) * np.log1p(np.maximum(a, 0)) + w * np.log1p(np.maximum(b, 0)))


def error_corr(a: np.ndarray, b: np.ndarray, obs: np.ndarray) -> float:
    """Pearson correlation of the errors a - obs and b - obs over the samples where all three exist."""
    ea, eb = (a - obs).ravel(), (b - obs).ravel()
    ok = np.isfinite(ea) & np.isfinite(eb)
    return float(np.corrcoef(ea[ok], eb[ok])[0, 1])


def main() -> None:
    # script_inputs: this folder, first on sys.path when run as a script
    from script_inputs import model_options, network_and_trees

    a = model_options(__doc__.splitlines()[0]).parse_args()
    from models.baselines import Climatology
    from training import evaluate as ev
    from training.metrics import basic_scores

    f = network_and_trees(a)
    deep, gbt, obs, names, inputs, inits, ds = f.deep, f.gbt, f.obs, f.names, f.inputs, f.inits, f.ds
    n_l = deep.shape[1]
    cols = [names.index(s) for s in inputs]
    series = np.stack([ds[f"stn_{sp}"].transpose("time", "station").values[:, cols] for sp in ("pm25", "o3")], 1)
    times = ds["time"].values
    t_tr = [ev.parse_time(x, "train_period")[0] for x in f.meta["config"]["data"]["train_period"]]
    clim = Climatology().fit(series, times, (times >= t_tr[0]) & (times <= t_tr[1]))
    valid = inits[:, None] + np.arange(1, n_l + 1)[None, :] * ev.HOUR
    c_st = clim.at(valid)
    c_pool = np.broadcast_to(clim.at(valid, np.full(len(cols), -1)), c_st.shape)

    print(f"{len(inits)} inits every {a.every} h at the input stations; MAE ug m-3 at leads "
          f"{' / '.join(map(str, LEADS_SHOWN))}")
    print("| forecast | PM2.5 | O3 |\n|---|---|---|")

    def row(name: str, p: np.ndarray) -> None:
        m = basic_scores(p, obs)["mae"]
        print(f"| {name} | " + " | ".join(" / ".join(f"{m[lead - 1, s]:.2f}" for lead in LEADS_SHOWN)
                                         for s in (0, 1)) + " |", flush=True)

    row("network", deep)
    row("GBT", gbt)
    for w in WEIGHTS:
        row(f"network mixed with GBT, w = {w}", log_mix(deep, gbt, w))
    for w in WEIGHTS[:2]:
        row(f"network mixed with station climatology, w = {w}", log_mix(deep, c_st, w))
        row(f"network mixed with pooled climatology, w = {w}", log_mix(deep, c_pool, w))
    print("\nerror correlation network / GBT at 24 h: PM2.5 "
          f"{error_corr(deep[:, 23, 0], gbt[:, 23, 0], obs[:, 23, 0]):.2f}, "
          f"O3 {error_corr(deep[:, 23, 1], gbt[:, 23, 1], obs[:, 23, 1]):.2f}")


if __name__ == "__main__":
    main()
