"""Diagnostic: at a station that observed the init hour, would blending the P50 toward that observation help?

    AQCAST_HOME=… python docs/scorecard/persistence_blend.py --model models:/aqcast/1 --store STORE
        [--fit-every 30] [--fit-from 2013-03-02T00:00+08:00] [--fit-to 2015-02-25T00:00+08:00] [--every 6]

The network's P50 at +1 h is ~10 % worse than persistence at its input stations (the skip's weight is shared by
cells with their own init-hour observation and cells that only see it spread from neighbours, as the station
drop-out trains them). Here, per lead and species, a weight a in [0, 1] blends the P50 toward the exact init-hour
observation in log1p space, expm1((1 - a) log1p(P50) + a log1p(obs at init)), at samples whose station observed
the init hour (others unchanged). a is fitted on *training-period* inits (the network has seen them) by the
absolute error in log1p space (`training.blend_fit.fit_weights`, what `optim.persistence_blend_every_h` does inside
`aqcast train` on the model's own inputs), then the blend is scored on the validation inits at the input stations,
on the GBT reference's samples as in the scorecard. The weights that the validation year itself would pick are
printed too, to show how far the training-period fit is from them; they are not a forecast.
"""
from __future__ import annotations

import time

import numpy as np

LEADS_SHOWN = (1, 2, 3, 6, 12, 24, 48, 72)


def init_obs(ds, inits: np.ndarray, inputs: list[str]) -> np.ndarray:
    """The observation at each init hour itself (NaN where missing), [N, 2, S_inputs]."""
    st = [str(s) for s in ds["station"].values]
    cols = [st.index(s) for s in inputs]
    times = ds["time"].values.astype("datetime64[ns]")
    idx = np.searchsorted(times, inits.astype("datetime64[ns]"))
    out = [ds[f"stn_{p}"].transpose("time", "station").values[idx][:, cols] for p in ("pm25", "o3")]
    return np.stack(out, axis=1).astype(float)


def blend(p50: np.ndarray, last: np.ndarray, a: np.ndarray) -> np.ndarray:
    """p50 [N, L, 2, S], last [N, 2, S], a [L, 2] -> the blended P50 in ug m-3 (unchanged where `last` is NaN)."""
    from training.blend_fit import apply_weights

    return np.where(np.isfinite(last[:, None]), np.expm1(apply_weights(log1p(p50), log1p(last), a)), p50)


def log1p(x: np.ndarray) -> np.ndarray:
    """log1p of the non-negative part, NaN kept: the space the weights are fitted in."""
    return np.log1p(np.maximum(x, 0))


def main() -> None:
    # script_inputs: this folder, first on sys.path when run as a script
    from script_inputs import at_input_stations, gbt_p50, load, model_options

    from training import evaluate as ev
    from training.blend_fit import fit_weights
    from training.metrics import basic_scores

    ap = model_options(__doc__.splitlines()[0])
    ap.add_argument("--fit-every", type=int, default=30, help="hours between the training-period inits")
    ap.add_argument("--fit-from", default="2013-03-02T00:00+08:00")
    ap.add_argument("--fit-to", default="2015-02-25T00:00+08:00")
    a = ap.parse_args()
    net, meta, ds, t0, t1 = load(a)
    f0, _ = ev.parse_time(a.fit_from, "--fit-from")
    f1, _ = ev.parse_time(a.fit_to, "--fit-to")
    tic = time.time()
    fit_inits = ev.init_times(f0, f1, a.fit_every)
    q_fit, obs_fit, _, inputs = at_input_stations(net, meta, ds, fit_inits)
    a_train = fit_weights(*map(log1p, (q_fit[:, :, :, 1], init_obs(ds, fit_inits, inputs), obs_fit)))
    print(f"fitted on {fit_inits.size} training-period inits in {time.time() - tic:.0f} s", flush=True)
    inits = ev.init_times(t0, t1, a.every)
    q, obs, names, inputs = at_input_stations(net, meta, ds, inits)
    deep = q[:, :, :, 1]
    gbt = gbt_p50(ds, meta, inits, inputs, names, deep.shape[1], t0, a.store)
    last = init_obs(ds, inits, inputs)
    last_all = np.repeat(last[:, None], deep.shape[1], axis=1)
    obs = np.where(np.isfinite(gbt) & np.isfinite(last_all), obs, np.nan)  # every row on the same samples
    a_val = fit_weights(*map(log1p, (deep, last, obs)))  # in-sample on the validation year: for comparison only

    def row(label: str, p50: np.ndarray) -> str:
        m = basic_scores(p50, obs)["mae"]
        cells = [" / ".join(f"{m[ld - 1, s]:.2f}" for ld in LEADS_SHOWN) for s in (0, 1)]
        return f"| {label} | {cells[0]} | {cells[1]} |"

    print(f"\n{inits.size} validation inits every {a.every} h at the input stations, samples where the trees "
          "forecast and the station observed the init hour; MAE ug m-3 at leads " + " / ".join(map(str, LEADS_SHOWN)))
    print("| forecast | PM2.5 | O3 |\n|---|---|---|")
    print(row("network", deep))
    print(row("network blended toward the init-hour observation (a fitted on training inits)",
              blend(deep, last, a_train)))
    print(row("(a fitted on the validation year itself, in-sample)", blend(deep, last, a_val)))
    print(row("persistence of the init hour", last_all))
    print(row("GBT reference", gbt))
    print("\n| lead h | " + " | ".join(map(str, LEADS_SHOWN)) + " |\n|---|" + "---|" * len(LEADS_SHOWN))
    for s, sp in enumerate(("PM2.5", "O3")):
        for label, w in (("training", a_train), ("validation (in-sample)", a_val)):
            print(f"| a, {sp}, {label} | " + " | ".join(f"{w[ld - 1, s]:.2f}" for ld in LEADS_SHOWN) + " |")


if __name__ == "__main__":
    main()
