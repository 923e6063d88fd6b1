"""Do long trailing means (the recent pollution level) help the trees through a trend between years?

    python docs/scorecard/gbt_level_features.py STORE [--windows 168 720] [--every 6]

The script first prints the yearly means (March to February, all stations of the store): in Beijing PM2.5 falls
and O3 rises from year to year, so a model fitted on the first two years meets a shifted level in the third. It
then fits the GBT
reference (`models/gbt.py`, as in `aqcast evaluate`) twice on the training period at the input stations, as it
is and with the trailing means of PM2.5 and O3 over `--windows` hours at init added to its features, and prints
the validation year's MAE and median error (forecast − observation) at 1 / 24 / 48 / 72 h, inits every `--every` h.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "beijing.yaml"  # periods and held-out stations


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store")
    ap.add_argument("--windows", type=int, nargs="+", default=[168, 720])
    ap.add_argument("--every", type=int, default=6)
    a = ap.parse_args()
    from features.store import open_store
    from models import gbt
    from training.baseline_report import init_indices, series_from_store
    from training.config import load_config
    from training.evaluate import parse_time

    data = load_config(CONFIG).data
    full = series_from_store(open_store(a.store))
    local = full.times + np.timedelta64(int(full.utc_offset_h * 3600), "s")
    month = local.astype("datetime64[M]").astype(int) % 12 + 1
    year = local.astype("datetime64[Y]").astype(int) + 1970 - (month < 3)  # years from 1 March
    for yr in np.unique(year):
        sel = year == yr
        print(f"year from March {yr}: mean PM2.5 {np.nanmean(full.values['pm25'][sel]):.1f}, "
              f"O3 {np.nanmean(full.values['o3'][sel]):.1f} ug m-3 ({sel.sum()} h)")
    ss = full.subset([i for i, s in enumerate(full.stations) if s not in data.held_out_stations])
    tr0, tr1, va0, va1 = (parse_time(t, "period")[0] for t in (*data.train_period, *data.val_period))
    tr_init = init_indices(ss, tr0, tr1, 1, 72, valid_inside=True)[::3]
    va_init = init_indices(ss, va0, va1, a.every, 72)
    va_init = va_init[va_init + 72 < ss.times.size]
    obs = ss.species()  # [T, 2, S]
    y = np.stack([obs[va_init + lead] for lead in range(1, 73)], 1)  # [N, L, 2, S]
    plain = gbt.FeatureBuilder.rows

    def with_levels(self, init, st, lead):
        x = plain(self, init, st, lead)
        extra = []
        for p in ("pm25", "o3"):
            for w in a.windows:
                roll = self.roll.setdefault((p, w), gbt._rolling_mean(self.poll[p], w))
                extra.append(roll[init, st].astype(np.float32))
                self.names.append(f"{p}_mean{w}")
        return np.concatenate([x, np.stack(extra, 1)], 1)

    print("| trees | PM2.5 MAE 1 / 24 / 48 / 72 h | PM2.5 median error 24 / 48 / 72 h | O3 MAE | O3 median error |")
    print("|---|---|---|---|---|")
    for label, rows in (("as in aqcast evaluate", plain), (f"+ trailing means {a.windows} h", with_levels)):
        gbt.FeatureBuilder.rows = rows
        try:
            g = gbt.GBTReference(leads=72).fit(ss, (ss.times >= tr0) & (ss.times <= tr1), tr_init)
            e = g.predict(ss, va_init)[:, :, :, 1] - y
        finally:
            gbt.FeatureBuilder.rows = plain
        cells = []
        for s in (0, 1):
            cells.append(" / ".join(f"{np.nanmean(np.abs(e[:, ld - 1, s])):.2f}" for ld in (1, 24, 48, 72)))
            cells.append(" / ".join(f"{np.nanmedian(e[:, ld - 1, s]):+.2f}" for ld in (24, 48, 72)))
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
