"""P10-P90 coverage by the UTC hour a forecast is issued at, for the calibration as shipped and with a diurnal
factor on the gaps (a candidate, not in the model).

    AQCAST_HOME=/tmp/bj python docs/scorecard/calib_by_issue_hour.py RUN_DIR/best.ckpt STORE [configs/beijing.yaml]

Collects the calibration ratios of the checkpoint on validation inits at every hour (as `aqcast train` does
every `data.calib_every_h`, with input stations dropped from the inputs), then prints, per issue hour, the
lowest and highest coverage over the 72 leads for: lead-only scales fitted on inits every 6/3/2/1 h (the
shipped form: `gap_scale[lead, species, side, class]`), and lead scales times a log-Fourier factor of the
local valid hour fitted on all hours (in-sample, and both forms cross-fitted by calendar month). Takes ~4 min on 2 cores.
"""
from __future__ import annotations

import json
import sys

import numpy as np

from training.calibrate import blended, collect_ratios, coverage, fit_scales


def fourier(h: np.ndarray) -> np.ndarray:
    a = 2 * np.pi * np.asarray(h) / 24
    return np.stack([np.sin(a), np.cos(a), np.sin(2 * a), np.cos(2 * a)], -1)


def fit_diurnal(r: dict, s: np.ndarray, vh: np.ndarray, q: float = 0.9) -> np.ndarray:
    """Per species and side, 4 Fourier coefficients of log(quantile of ratio / scale) by local valid hour."""
    coef, sc = np.zeros((2, 2, 4)), blended(r, s)
    for k in range(2):
        for side, key in enumerate(("r_lo", "r_hi")):
            x = r[key][:, :, k] / sc[:, :, k, side]
            qh = np.log([np.quantile(x[r["valid"][:, :, k] & (vh[:, :, None] == h)], q) for h in range(24)])
            coef[k, side] = np.linalg.lstsq(fourier(np.arange(24)), qh - qh.mean(), rcond=None)[0]
    return coef


def with_factor(r: dict, vh: np.ndarray, sel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lead scales refitted after the diurnal factor, both on samples `sel` -> (scales, factor [N, L, 2, 2])."""
    sub = {k: (v[sel] if v.shape[:1] == sel.shape else v) for k, v in r.items()}
    coef = fit_diurnal(sub, fit_scales(sub), vh[sel])
    d = np.exp(np.einsum("nlf,ksf->nlks", fourier(vh), coef))
    sub["r_lo"], sub["r_hi"] = sub["r_lo"] / d[sel][..., 0, None], sub["r_hi"] / d[sel][..., 1, None]
    return fit_scales(sub), d


def cov_range(r: dict, s: np.ndarray, sel: np.ndarray, d: np.ndarray | None = None) -> str:
    sc = blended(r, s)
    if d is not None:
        sc = sc * d[..., None]
    c = coverage(r, s, sel, hit=(r["r_lo"] <= sc[:, :, :, 0]) & (r["r_hi"] <= sc[:, :, :, 1]))
    return f"pm25 {np.nanmin(c[:, 0]):.2f}-{np.nanmax(c[:, 0]):.2f}  o3 {np.nanmin(c[:, 1]):.2f}-{np.nanmax(c[:, 1]):.2f}"


def main(ckpt: str, store: str, config: str = "configs/beijing.yaml") -> None:
    import lightning as L
    import torch

    from training.config import load_config
    from training.datamodule import AQDataModule
    from training.module import AQModule

    torch.set_num_threads(2)
    cfg = load_config(config, ["data.calib_every_h=1"])
    L.seed_everything(cfg.optim.seed, workers=True, verbose=False)
    dm = AQDataModule(cfg, store)
    dm.setup("fit")
    module = AQModule(cfg, dm.channels, json.loads(dm.ds.attrs["norm_stats"]))
    module.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"])
    module.eval()
    r = collect_ratios(module.net, dm.calib_dataloader())
    hour = r["hour"]
    vh = (hour[:, None] + np.arange(1, r["valid"].shape[1] + 1)[None] + 8) % 24  # local (+08:00) valid hour
    issue = (16, 0, 6, 12, 18)
    for every in (6, 3, 2, 1):
        s = fit_scales(r, hour % every == 0)
        print(f"lead-only scales, inits every {every} h: " + "; ".join(
            f"{h:02d} UTC {cov_range(r, s, hour == h)}" for h in issue))
    everything = np.ones(hour.shape, bool)
    s, d = with_factor(r, vh, everything)
    print("lead scales x diurnal factor, all hours: " + "; ".join(
        f"{h:02d} UTC {cov_range(r, s, hour == h, d)}" for h in issue))
    even = r["month"] % 2 == 0
    for name, test in (("odd", ~even), ("even", even)):
        s, d = with_factor(r, vh, ~test)
        lead_only = fit_scales(r, ~test)
        print(f"  cross-fit, scored on {name} months, lead x diurnal: " + "; ".join(
            f"{h:02d} UTC {cov_range(r, s, test & (hour == h), d)}" for h in issue))
        print(f"  cross-fit, scored on {name} months, lead only:      " + "; ".join(
            f"{h:02d} UTC {cov_range(r, lead_only, test & (hour == h))}" for h in issue))


if __name__ == "__main__":
    main(*sys.argv[1:4])
