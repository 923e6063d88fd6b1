"""Does the way input stations are dropped for the P10/P90 calibration decide the band at held-out stations?

    AQCAST_HOME=… python docs/scorecard/calib_schemes.py --model models:/aqcast/1 --store STORE
        [--schemes bern:0 bern:1 one:0 one:1 loso] [--weight-scale 0] [--every 6] [--from …] [--to …]

The model's band is refitted (`training.calibrate.fit_band`, as after training) on the validation inits at the
input stations, some of them dropped from the inputs by each scheme: `bern:SEED` each station with the
config's drop probability (the shipped scheme; SEED 0 as in training), `one:K` exactly one station per init
(station (i + K) mod n at init i, the rest of the network reporting, as at a held-out station), `loso` every
station in turn at every init (n passes). Each band is then scored at the held-out stations (never used to
fit), overall and per station, and cross-fit by calendar month at the dropped input stations.
`--weight-scale 1` blends the two cell classes by the station weight of the second spreading scale instead of
the finest. Reads the model's channels and drop probability from its metadata; changes nothing stored.
"""
from __future__ import annotations

import functools
import time

import numpy as np

LEADS_SHOWN = (1, 6, 12, 24, 48, 72)


def kept_inputs(scheme: str, n: int, i: int) -> np.ndarray | None:
    """Which of `n` input stations stay in the inputs of init `i` under `scheme` (`one:K`: all but station
    (i + K) mod n; `fix:J`: all but J); None for `bern:SEED`, the sampler's own Bernoulli draw."""
    name, _, arg = scheme.partition(":")
    k = int(arg or 0)
    if name == "bern":
        return None
    if name in ("one", "fix"):
        return np.arange(n) != ((int(i) + k) % n if name == "one" else k % n)
    raise ValueError(f"unknown scheme {scheme!r}: bern:SEED, one:K, fix:J or loso")


def concat_ratios(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The ratios of several calibration passes as one set of samples (`collect_ratios`' keys)."""
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def main() -> None:
    # script_inputs: this folder, first on sys.path when run as a script
    from script_inputs import load, model_options

    ap = model_options(__doc__.splitlines()[0])
    ap.add_argument("--schemes", nargs="+", default=["bern:0", "bern:1", "one:0", "one:1", "loso"])
    ap.add_argument("--weight-scale", type=int, default=0, help="spreading scale of the station weight")
    a = ap.parse_args()
    from torch.utils.data import DataLoader

    from training import calibrate as cb
    from training import evaluate as ev
    from training.datamodule import collate_batch

    net, meta, ds, t0, t1 = load(a)
    inits = ev.init_times(t0, t1, a.every)
    inputs, held = ev.station_split(ds, meta, None)
    drop = float(((meta.get("config") or {}).get("data") or {}).get("drop_prob", 0.15))
    if a.weight_scale:  # collect_ratios reads the class blend from net.station_weight
        net.station_weight = functools.partial(net.station_weight, scale=a.weight_scale)

    def loader(scheme: str | None, flip: bool = False):
        seed = int(scheme.partition(":")[2] or 0) if scheme and scheme.startswith("bern") else 0
        s, _ = ev.make_sampler(ds, inits, meta, net, input_stations=inputs, seed=seed,
                               drop_prob=drop if scheme else 0.0)
        if scheme and kept_inputs(scheme, s._in_cells.size, 0) is not None:
            s._kept_inputs = lambda i, n=s._in_cells.size: kept_inputs(scheme, n, i)
        for b in DataLoader(s, batch_size=16, shuffle=False, collate_fn=collate_batch):
            if flip:  # score the held-out stations instead of the input stations
                b["station_withheld"] = 1 - b["station_withheld"]
            yield b

    r_ho = cb.collect_ratios(net, loader(None, flip=True))
    ho_cols = [j for j in range(r_ho["valid"].shape[-1]) if r_ho["valid"][..., j].any()]
    print(f"{len(inits)} inits every {a.every} h; held-out {held}; input-station drop probability {drop}; "
          f"station weight at scale {a.weight_scale}")
    print("| scheme | unobserved samples a lead | species | cross-fit at input stations | at dropped ones | "
          f"held-out | held-out at leads {' / '.join(map(str, LEADS_SHOWN))} | "
          + " | ".join(f"{held[k]} at 1 / 6 / 24 / 72 h" for k in range(len(ho_cols))) + " |")
    print("|---" * (7 + len(ho_cols)) + "|")
    for scheme in a.schemes:
        tic = time.time()
        r = (concat_ratios([cb.collect_ratios(net, loader(f"fix:{j}")) for j in range(len(inputs))])
             if scheme == "loso" else cb.collect_ratios(net, loader(scheme)))
        scales, coef = cb.fit_band(r)
        cv = cb.crossfit_inside(r)
        c_in, c_un = cb.coverage(r, scales, hit=cv), cb.coverage(r, scales, cls=1, hit=cv)
        rd = cb.deflated(r_ho, coef)
        hit, c_ho = cb.inside(rd, scales), cb.coverage(rd, scales)
        n_un = int((r["valid"] & ~cb._observed(r))[:, 0].sum())
        for k, sp in enumerate(("pm25", "o3")):
            per = []
            for j in ho_cols:
                v = r_ho["valid"][:, :, k, j]
                c = (hit[:, :, k, j] & v).sum(0) / np.maximum(v.sum(0), 1)
                per.append(" / ".join(f"{c[lead - 1]:.2f}" for lead in (1, 6, 24, 72)))
            rng = [f"{np.nanmin(x[:, k]):.3f}–{np.nanmax(x[:, k]):.3f}" for x in (c_in, c_un, c_ho)]
            print(f"| {scheme} | {n_un} | {sp} | " + " | ".join(rng) + " | "
                  + " / ".join(f"{c_ho[lead - 1, k]:.2f}" for lead in LEADS_SHOWN) + " | " + " | ".join(per)
                  + " |", flush=True)
        print(f"<!-- {scheme}: {time.time() - tic:.0f} s -->", flush=True)


if __name__ == "__main__":
    main()
