"""Do the weather hours *after* the valid hour help? The trees refitted with them, as a probe for the network.

    python docs/scorecard/gbt_ahead_features.py --store /tmp/bj/store-clk.zarr [--mode base|ahead]

The GBT reference (`models/gbt.py`) is fitted on 2013-03 → 2015-02 at the eight input stations (every 3 h, as
`aqcast evaluate` fits it) and scored every 6 h on 2015-03 → 2016-02 at leads 6-72 h. `--mode ahead` adds, per row,
the change of t2m, d2m, rh, ws, u10, v10 and sp from the valid hour to 3 and 6 h later (capped at the horizon's
end, so only weather a 72-h forecast holds) and the temperature range over the 24 h around the valid hour: what a
per-lead decoder that sees only the valid hour and the hours before it cannot see. Run both modes and compare.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

HELD_OUT = ("Dongsi", "Dingling")


def ahead_rows(orig):
    """`FeatureBuilder.rows` with the ahead features appended."""
    def rows(self, init, st, lead):
        x = orig(self, init, st, lead)
        cols, names, end, valid = [x], list(self.names), init + 72, init + lead
        for m in ("t2m", "d2m", "rh", "ws", "u10", "v10", "sp"):
            a = self.met[m]
            for k in (3, 6):
                cols.append((a[np.minimum(valid + k, end), st] - a[valid, st])[:, None])
                names.append(f"{m}_ahead{k}")
        a = self.met["t2m"]
        win = np.stack([a[np.clip(valid + k, 0, end), st] for k in range(-12, 13)], 1)
        cols.append((np.nanmax(win, 1) - np.nanmin(win, 1))[:, None])
        names.append("t2m_range24c")
        self.names = names
        return np.concatenate(cols, 1).astype(np.float32)
    return rows


def main() -> None:
    import xarray as xr

    from models import gbt
    from training.baseline_report import init_indices, series_from_store

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--mode", choices=("base", "ahead"), default="ahead")
    a = ap.parse_args()
    full = series_from_store(xr.open_zarr(a.store))
    ss = full.subset([i for i, s in enumerate(full.stations) if s not in HELD_OUT])
    t = ss.times
    tr0, tr1 = np.datetime64("2013-02-28T16:00"), np.datetime64("2015-02-28T15:00")
    va = init_indices(ss, np.datetime64("2015-02-28T16:00"), np.datetime64("2016-02-29T15:00"), 6, 72)
    va = va[va + 72 < t.size]
    if a.mode == "ahead":
        gbt.FeatureBuilder.rows = ahead_rows(gbt.FeatureBuilder.rows)
    tic = time.time()
    g = gbt.GBTReference(leads=72).fit(ss, (t >= tr0) & (t <= tr1),
                                       init_indices(ss, tr0, tr1, 1, 72, valid_inside=True)[::3])
    p = g.predict(ss, va)
    print(f"{a.mode}: fitted and predicted in {time.time() - tic:.0f} s")
    obs = np.stack([ss.values[s] for s in ("pm25", "o3")], 1)
    for lead in (6, 12, 24, 48, 72):
        e = np.abs(p[:, lead - 1, :, 1, :] - obs[va + lead])
        print(f"{a.mode} {lead:2d} h  pm25 {np.nanmean(e[:, 0]):.2f}  o3 {np.nanmean(e[:, 1]):.2f}")


if __name__ == "__main__":
    main()
