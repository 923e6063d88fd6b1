"""P10-P90 coverage by the UTC hour a forecast is issued at: lead-only gap scales against lead scales times the
diurnal factor of the valid hour (`training.calibrate.fit_band`, shipped since bj-x), in-sample and cross-fitted
by calendar month.

    AQCAST_HOME=/tmp/bj python docs/scorecard/calib_by_issue_hour.py RUN_DIR/best.ckpt STORE [configs/beijing.yaml]

Collects the calibration ratios of the checkpoint on validation inits at every hour (as `aqcast train` does
every `data.calib_every_h`, with input stations dropped from the inputs), then prints, per issue hour, the
lowest and highest coverage over the 72 leads for each form, fitted on inits every 6 h (as shipped) and every
hour. Takes ~5 min and ~4 GB on 2 cores.
"""
from __future__ import annotations

import json
import sys

import numpy as np

from training.calibrate import collect_ratios, coverage, crossfit_inside, deflated, fit_band, inside

ISSUE = (16, 0, 6, 12, 18)


def cov_range(r: dict, scales: np.ndarray, coef: np.ndarray, test: np.ndarray) -> str:
    return _range(coverage(r, scales, test, hit=inside(deflated(r, coef), scales)))


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
    for every in (6, 1):
        sel = hour % every == 0
        for name, use_hour in (("lead only", False), ("lead x diurnal", True)):
            s, c = fit_band(r, sel, hour=use_hour)
            print(f"{name:15s} fitted every {every} h, in-sample: " + "; ".join(
                f"{h:02d} UTC {cov_range(r, s, c, hour == h)}" for h in ISSUE))
            hit = crossfit_inside(r, sel, hour=use_hour)
            print(f"{name:15s} fitted every {every} h, cross-fit: " + "; ".join(
                f"{h:02d} UTC {_range(coverage(r, s, hour == h, hit=hit))}" for h in ISSUE))


def _range(c: np.ndarray) -> str:
    return f"pm25 {np.nanmin(c[:, 0]):.2f}-{np.nanmax(c[:, 0]):.2f}  o3 {np.nanmin(c[:, 1]):.2f}-{np.nanmax(c[:, 1]):.2f}"


if __name__ == "__main__":
    main(*sys.argv[1:4])
