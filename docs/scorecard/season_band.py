"""Does a seasonal factor on the P10/P90 gaps (`optim.calibrate_season`, M45) hold on a year it was not fitted on?

    AQCAST_HOME=… python docs/scorecard/season_band.py --model models:/aqcast/1 --store STORE \
        --calib-from 2014-03-01T00:00+08:00 --calib-to 2015-02-28T23:00+08:00 [--from T0 --to T1] [--every 6]

The model's band is refitted (`training.calibrate.fit_band`, as after training) on the inits of the calibration
period every `--every` h at the input stations, some dropped from the inputs as in training (the config's drop
probability, seed 0), three ways: as shipped (lead scales and the diurnal factor), plus a seasonal factor for O3,
plus one for both species. Each band is scored on the test period (`--from` / `--to`) at the input stations and at
the held-out stations (never used to fit): the coverage range over the leads, and by month of the valid time over
all leads. The P50 is the model's; nothing stored changes.
"""
from __future__ import annotations

import numpy as np

VARIANTS = {"shipped": (), "+ season O3": (1,), "+ season both": (0, 1)}
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def valid_month(r: dict[str, np.ndarray]) -> np.ndarray:
    """[N, L, S] month index (0 = January) of each sample's valid time, from its day-of-year basis."""
    sb = r["season"]
    return (np.floor((np.arctan2(sb[..., 0], sb[..., 1]) / (2 * np.pi)) % 1.0 * 12).astype(int)) % 12


def by_month(hit: np.ndarray, r: dict[str, np.ndarray], stations: np.ndarray) -> np.ndarray:
    """Coverage [12, species] over all leads at the station columns `stations` (NaN where nothing valid)."""
    m, keep = valid_month(r), r["valid"] & stations[None, None, None, :]
    out = np.full((12, 2), np.nan)
    for k in range(2):
        for b in range(12):
            sel = keep[:, :, k] & (m == b)
            if sel.any():
                out[b, k] = (hit[:, :, k] & sel).sum() / sel.sum()
    return out


def only(r: dict[str, np.ndarray], stations: np.ndarray) -> dict[str, np.ndarray]:
    """The ratios with only the station columns `stations` valid."""
    return {**r, "valid": r["valid"] & stations[None, None, None, :]}


def main() -> None:
    # script_inputs: this folder, first on sys.path when run as a script
    from script_inputs import load, model_options
    from torch.utils.data import DataLoader

    from training import calibrate as cb
    from training import evaluate as ev
    from training.datamodule import collate_batch

    ap = model_options(__doc__.splitlines()[0])
    ap.add_argument("--calib-from", required=True)
    ap.add_argument("--calib-to", required=True)
    a = ap.parse_args()
    net, meta, ds, t0, t1 = load(a)
    c0, _ = ev.parse_time(a.calib_from, "--calib-from")
    c1, _ = ev.parse_time(a.calib_to, "--calib-to")
    inputs, held = ev.station_split(ds, meta, None)
    drop = float(((meta.get("config") or {}).get("data") or {}).get("drop_prob", 0.15))

    def ratios(inits: np.ndarray, drop_prob: float, everywhere: bool):
        s, _ = ev.make_sampler(ds, inits, meta, net, input_stations=inputs, seed=0, drop_prob=drop_prob)

        def batches():
            for b in DataLoader(s, batch_size=16, shuffle=False, collate_fn=collate_batch):
                if everywhere:  # score every station, input or held out (split by column below)
                    b["station_withheld"] = b["station_withheld"] * 0
                yield b
        return cb.collect_ratios(net, batches()), np.isin(list(s.target_stations), inputs)

    r_cal, _ = ratios(ev.init_times(c0, c1, a.every), drop, False)
    r_test, is_input = ratios(ev.init_times(t0, t1, a.every), 0.0, True)
    print(f"calibration {a.calib_from} .. {a.calib_to}, test {a.t_from} .. {a.t_to}, every {a.every} h; "
          f"held-out {held}; drop probability {drop}")
    rows, months = [], {}
    for name, season in VARIANTS.items():
        scales, coef = cb.fit_band(r_cal, season=season)
        hit = cb.inside(cb.deflated(r_test, coef), scales)
        cov = {grp: cb.coverage(only(r_test, cols), scales, hit=hit) for grp, cols in
               (("input", is_input), ("held-out", ~is_input))}
        sea = coef[..., 4:] if coef.shape[-1] > 4 else np.zeros((2, 2, 2))
        rows.append(f"| {name} | " + " | ".join(f"{np.nanmin(c[:, k]):.2f}–{np.nanmax(c[:, k]):.2f}"
                                                for c in cov.values() for k in range(2))
                    + f" | {np.round(sea[1], 2).tolist()} |")
        months[name] = {grp: by_month(hit, r_test, cols) for grp, cols in (("input", is_input), ("held-out", ~is_input))}
    print("| band | input PM2.5 | input O3 | held-out PM2.5 | held-out O3 | O3 seasonal coef [side][sin, cos] |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    for k, sp in enumerate(("PM2.5", "O3")):
        print(f"\n{sp} coverage by month of the valid time, input / held-out stations:\n")
        print("| month | " + " | ".join(months) + " |\n" + "|---" * (len(months) + 1) + "|")
        for b in (2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0, 1):
            print(f"| {MONTHS[b]} | " + " | ".join(f"{m['input'][b, k]:.2f} / {m['held-out'][b, k]:.2f}"
                                                  for m in months.values()) + " |")


if __name__ == "__main__":
    main()
