"""Which of the trees' point features hold what the network misses? The trees refitted without each group.

    AQCAST_HOME=… python docs/scorecard/gbt_feature_groups.py --model models:/aqcast/1 --store STORE
        [--groups other_pollutants met_init_run met_valid history calendar] [--every 6] [--from …] [--to …]

The GBT reference (`models/gbt.py`) is refitted on the training period at the input stations with one group of
its features blanked (set to 0 everywhere: a constant the trees cannot split on) after its persistence-climatology offset is
formed, so the offset stays the same. Each refit is scored on the validation inits beside the network, alone
and mixed with the network's P50 in log1p space (w = 0.3, `blend_diagnostic.py`): a group whose removal takes
the mix's gain away holds the information the network misses. Each refit takes a minute or two.
"""
from __future__ import annotations

import re
import tempfile

import numpy as np

MET = "(t2m|d2m|rh|sp|ws|u10|v10|tp|blh|ssr)"
GROUPS = {  # name -> regular expression over `FeatureBuilder` names
    "other_pollutants": r"^(pm10|no2|co|so2)_",
    "met_init_run": rf"^{MET}_(init|run)$|^sp_change$",
    "met_valid": rf"^{MET}_valid$",
    "history": r"^(pm25|o3)_(lag([2-9]|1\d|2\d)|mean24|diurnal)$",  # lag0, lag1, mean6 stay: the offset's gaps
    "calendar": r"^(hour_valid|hour_init|doy_sin|doy_cos|weekday)$",
}
LEADS_SHOWN = (6, 24, 48, 72)


def group_columns(names: list[str], pattern: str) -> np.ndarray:
    """Indices of the feature names that match `pattern`."""
    return np.array([i for i, n in enumerate(names) if re.search(pattern, n)], dtype=int)


def main() -> None:
    # script_inputs: this folder, first on sys.path when run as a script
    from blend_diagnostic import log_mix
    from script_inputs import model_options, network_and_trees

    ap = model_options(__doc__.splitlines()[0])
    ap.add_argument("--groups", nargs="+", default=list(GROUPS), choices=list(GROUPS))
    a = ap.parse_args()
    from models.gbt import GBTReference
    from training import evaluate as ev
    from training.evaluate_gbt import gbt_forecast
    from training.metrics import basic_scores

    f = network_and_trees(a)  # every refit is scored on the shipped trees' samples (f.obs)
    deep, full, obs, names, inputs, inits, ds = f.deep, f.gbt, f.obs, f.names, f.inputs, f.inits, f.ds
    meta, t0, n_l = f.meta, f.t0, f.deep.shape[1]
    ds_p = ev.pad_time(ds, inits.min() - 24 * ev.HOUR, inits.max() + n_l * ev.HOUR)

    def cells(p: np.ndarray) -> str:
        m = basic_scores(p, obs)["mae"]
        return " | ".join(" / ".join(f"{m[lead - 1, s]:.2f}" for lead in LEADS_SHOWN) for s in (0, 1))

    print(f"{len(inits)} inits every {a.every} h at the input stations; MAE ug m-3 at leads "
          f"{' / '.join(map(str, LEADS_SHOWN))}")
    print("| trees | blanked features | trees PM2.5 | trees O3 | network + 0.3 trees PM2.5 | O3 |\n|---|---|---|---|---|---|")
    print(f"| network alone | | | | {cells(deep)} |")
    print(f"| all features (shipped) | 0 | {cells(full)} | {cells(log_mix(deep, full, 0.3))} |", flush=True)
    offset = GBTReference._offset
    for group in a.groups:
        blanked: list[str] = []

        def masked(self, x, lead, pattern=GROUPS[group], blanked=blanked):
            base = offset(self, x, lead)
            idx = group_columns(self.feature_names, pattern)
            x[:, idx] = 0.0  # in place: the trees see the blanked matrix, the offset did not
            blanked[:] = [self.feature_names[i] for i in idx]
            return base

        GBTReference._offset = masked
        try:
            with tempfile.TemporaryDirectory() as tmp:
                g, _ = gbt_forecast(ds_p, meta, inits, inputs, names, n_l, t0, a.store, cache=tmp)
        finally:
            GBTReference._offset = offset
        g50 = g[:, :, :, 1][..., np.isin(names, inputs)]
        print(f"| without {group} | {len(blanked)} | {cells(g50)} | {cells(log_mix(deep, g50, 0.3))} |",
              flush=True)


if __name__ == "__main__":
    main()
