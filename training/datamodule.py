"""LightningDataModule over a feature store: `features.windows.WindowSampler` for train and validation.

Training inits lie in the training period with their whole target window inside it (init + leads <= end), so
no training target falls in the validation period. Training samples drop input stations at random
(`data.drop_prob`, redrawn every epoch); validation has no drop-out and scores every station, the held-out
ones (`data.held_out_stations`, never inputs, never in the loss) reported separately.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd

from features.errors import DataError, Problem
from training.config import CALENDAR, TrainConfig, parse_time

log = logging.getLogger(__name__)
HOUR = np.timedelta64(3600 * 10**9, "ns")
ROLE_OK = {"obs": ("observed", "target"), "forcing": ("forcing",), "static": ("static",)}


def _utc(ts: pd.Timestamp) -> np.datetime64:
    return np.datetime64(ts.tz_convert("UTC").tz_localize(None).value, "ns")


def resolve_channels(ds: Any, cfg: TrainConfig) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Check the configured channels against the store's roles.

    Returns ({obs, forcing, static}: names in order, {dropped name: reason}). A channel the store lists as
    `missing` is dropped with a warning (never a crash); a channel with the wrong role or unknown to the store
    raises DataError.
    """
    from features.windows import COMPUTED_STATICS

    roles = json.loads(ds.attrs.get("roles", "{}"))
    missing = set(json.loads(ds.attrs.get("missing", "[]")))
    reasons = json.loads(ds.attrs.get("missing_reasons", "{}"))
    problems, dropped = [], {}
    out: dict[str, list[str]] = {}
    for group, names in (("obs", cfg.data.obs_vars), ("forcing", cfg.data.forcing_vars),
                         ("static", cfg.data.static_vars)):
        keep = []
        for n in names:
            if n in CALENDAR or (group == "static" and n in COMPUTED_STATICS):
                keep.append(n)
                continue
            src = f"stn_{n[4:]}" if n.startswith("obs_") and n not in ds else n
            if src not in ds:
                if n in missing or src in missing:
                    dropped[n] = reasons.get(n, reasons.get(src, "listed as missing in the store"))
                else:
                    problems.append(Problem(f"{group}_vars: {n!r} is not in the store (has: "
                                            f"{sorted(v for v in roles if roles[v] == _role_hint(group))})",
                                            key=f"data.{group}_vars"))
                continue
            role = roles.get(src, ds[src].attrs.get("role"))
            if role not in ROLE_OK[group]:
                problems.append(Problem(f"{n!r} has role {role!r} in the store; {group}_vars need "
                                        f"{' or '.join(ROLE_OK[group])}", key=f"data.{group}_vars"))
                continue
            keep.append(n)
        out[group] = keep
    if problems:
        raise DataError(problems)
    if dropped:
        log.warning("%s", absent_note(dropped))
    for group in ("obs", "forcing"):
        if not out[group]:
            raise DataError(Problem(f"no {group} channel left after dropping missing ones {sorted(dropped)}",
                                    key=f"data.{group}_vars"))
    return out, dropped


def absent_note(dropped: dict[str, str]) -> str:
    """One line for the optional channels the data lacks, grouped by the store's reason."""
    by_reason: dict[str, list[str]] = {}
    for name, why in dropped.items():
        by_reason.setdefault(why, []).append(name)
    parts = "; ".join(f"{', '.join(names)} ({why})" for why, names in by_reason.items())
    n = len(dropped)
    them = "them" if n > 1 else "it"
    return (f"{n} channel{'s' if n > 1 else ''} of the config not in this data, the model trains without {them} "
            f"(its card lists {them} as dropped_channels): {parts}")


def _role_hint(group: str) -> str:
    return {"obs": "observed", "forcing": "forcing", "static": "static"}[group]


def resolve_periods(ds: Any, cfg: TrainConfig) -> dict[str, tuple[np.datetime64, np.datetime64]]:
    """Train/val periods as UTC datetime64 (config, else the store's `train_period` attr / the rest)."""
    times = ds["time"].values.astype("datetime64[ns]")
    if cfg.data.train_period:
        tr = tuple(_utc(parse_time(t)) for t in cfg.data.train_period)
    else:
        attr = json.loads(ds.attrs.get("train_period", "null"))
        if not attr:
            raise DataError("config has no data.train_period and the store no train_period attr")
        tr = tuple(_utc(parse_time(t) if pd.Timestamp(t).tzinfo else pd.Timestamp(t, tz="UTC")) for t in attr)
    if cfg.data.val_period:
        va = tuple(_utc(parse_time(t)) for t in cfg.data.val_period)
    else:
        va = (tr[1] + HOUR, times[-1])
    return {"train": tr, "val": va}


def split_stations(ds: Any, cfg: TrainConfig) -> tuple[list[str], list[str]]:
    """(input stations, all stations); held-out stations must exist in the store."""
    stations = [str(s) for s in ds["station"].values]
    unknown = [s for s in cfg.data.held_out_stations if s not in stations]
    if unknown:
        raise DataError(Problem(f"held-out station(s) {unknown} not in the store (has {stations})",
                                key="data.held_out_stations"))
    inputs = [s for s in stations if s not in cfg.data.held_out_stations]
    if not inputs:
        raise DataError(Problem("every station is held out: keep at least one as input",
                                key="data.held_out_stations"))
    return inputs, stations


def init_times(ds: Any, period: tuple[np.datetime64, np.datetime64], every_h: int, history: int,
               leads: int, what: str) -> np.ndarray:
    """Inits in the period whose target window ends inside it (and whose history lies in the store)."""
    from features.windows import valid_init_times

    t = valid_init_times(ds, period[0], period[1] - leads * HOUR, every_h=every_h, history=history, leads=leads)
    if t.size == 0:
        raise DataError(Problem(f"no {what} init time with a complete window in {period[0]} .. {period[1]} "
                                f"(history {history} h, leads {leads} h; store {ds['time'].values[0]} .. "
                                f"{ds['time'].values[-1]})", key=f"data.{what}_period"))
    return t


def recency_weights(inits: np.ndarray, halflife_days: float) -> np.ndarray:
    """Sampling weights of training inits: 1 at the last, halving every `halflife_days` before it."""
    return 0.5 ** ((inits.max() - inits) / np.timedelta64(1, "D") / halflife_days)


def collate_batch(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    """`WindowSampler.__getitems__` (a batch of numpy arrays) -> torch tensors, without copying."""
    import torch

    return {k: torch.from_numpy(v) for k, v in batch.items()}


class AQDataModule(L.LightningDataModule):
    """Train/val WindowSamplers over the store at `store_path` (numpy items, torch default collate)."""

    def __init__(self, cfg: TrainConfig, store_path: str | Path):
        super().__init__()
        self.cfg, self.store_path = cfg, str(store_path)
        self.ds: Any = None
        self.train_ds: Any = None
        self.val_ds: Any = None
        self.channels: dict[str, list[str]] = {}
        self.dropped: dict[str, str] = {}
        self.periods: dict[str, tuple[np.datetime64, np.datetime64]] = {}
        self.input_stations: list[str] = []
        self.stations: list[str] = []
        self._sampler_kw: dict[str, Any] = {}

    def setup(self, stage: str | None = None) -> None:
        """Open the store once, check channels/periods/stations, build both samplers."""
        if self.train_ds is not None:
            return
        from features.store import open_store
        from features.windows import WindowSampler

        d, ds = self.cfg.data, open_store(self.store_path)
        self.channels, self.dropped = resolve_channels(ds, self.cfg)
        self.periods = resolve_periods(ds, self.cfg)
        self.input_stations, self.stations = split_stations(ds, self.cfg)
        tr = init_times(ds, self.periods["train"], d.train_every_h, d.history, d.leads, "train")
        va = init_times(ds, self.periods["val"], d.val_every_h, d.history, d.leads, "val")
        keep = sorted({f"stn_{n[4:]}" for n in self.channels["obs"] if n.startswith("obs_")}
                      | {f"qc_{n[4:]}" for n in self.channels["obs"] if n.startswith("obs_")}
                      | {"stn_pm25", "stn_o3", "qc_pm25", "qc_o3"}
                      | {f"{k}_{p}" for p in self.cfg.model.get("aux_targets", ()) for k in ("stn", "qc")}
                      | {n for g in self.channels.values() for n in g})
        ds = ds[[v for v in keep if v in ds]].load()  # only what the samplers read
        kw: dict[str, Any] = {"history": d.history, "leads": d.leads, "obs_vars": self.channels["obs"],
                              "forcing_vars": self.channels["forcing"], "static_vars": self.channels["static"],
                              "input_stations": self.input_stations, "seed": self.cfg.optim.seed}
        self.train_ds = WindowSampler(ds, tr, target_stations=self.input_stations, drop_prob=d.drop_prob,
                                      aux_targets=self.cfg.model.get("aux_targets", ()), **kw)
        self.val_ds = WindowSampler(ds, va, target_stations=self.stations, drop_prob=0.0, **kw)
        self.ds, self._sampler_kw = ds, kw
        log.info("train %d inits, val %d inits, channels %s", len(tr), len(va), self.channels)

    def train_dataloader(self) -> Any:
        import torch
        from torch.utils.data import DataLoader, RandomSampler, WeightedRandomSampler

        g = torch.Generator().manual_seed(self.cfg.optim.seed)
        n = self.cfg.data.max_train_samples
        n = min(n, len(self.train_ds)) if n else None
        if self.cfg.data.recent_halflife_days:  # the config requires max_train_samples with it
            sampler = WeightedRandomSampler(recency_weights(self.train_ds.init_times,
                                                            self.cfg.data.recent_halflife_days),
                                            num_samples=n, replacement=False, generator=g)
        else:
            sampler = RandomSampler(self.train_ds, num_samples=n, generator=g)
        return DataLoader(self.train_ds, batch_size=self.cfg.optim.batch_size, sampler=sampler, num_workers=0,
                          drop_last=len(self.train_ds) > self.cfg.optim.batch_size, collate_fn=collate_batch)

    def val_dataloader(self) -> Any:
        return self._in_order(self.val_ds)

    def _in_order(self, ds: Any) -> Any:
        from torch.utils.data import DataLoader

        return DataLoader(ds, batch_size=self.cfg.optim.batch_size, shuffle=False, num_workers=0,
                          collate_fn=collate_batch)

    def calib_dataloader(self) -> Any:
        """Validation inits every `data.calib_every_h` hours (None: `data.val_every_h`) for the quantile
        calibration, with input stations dropped at random as in training (`data.drop_prob`, seeded) so
        that both cell classes, observed and unobserved at init, are seen. Issue hours matter: a lead's
        coverage depends on the hour it is valid at."""
        d = self.cfg.data
        return self._period_loader("val", d.calib_every_h or d.val_every_h, self.stations, d.drop_prob)

    def train_period_dataloader(self, every_h: int) -> Any:
        """Training-period inits every `every_h` hours at the input stations, none dropped, in order: what the
        P50's blend toward the init-hour observation is fitted on (`training.blend_fit`)."""
        return self._period_loader("train", every_h, self.input_stations, 0.0)

    def _period_loader(self, period: str, every_h: int, stations: Any, drop_prob: float) -> Any:
        """Inits of the `period` ("train" / "val") every `every_h` hours, in order, scored at `stations`."""
        from features.windows import WindowSampler

        d = self.cfg.data
        t = init_times(self.ds, self.periods[period], every_h, d.history, d.leads, period)
        return self._in_order(WindowSampler(self.ds, t, target_stations=stations, drop_prob=drop_prob,
                                            **self._sampler_kw))

    def windows(self) -> dict[str, list[str]]:
        """Train/val periods as ISO strings (UTC, explicit offset) for metadata."""
        def iso(t: np.datetime64) -> str:
            return pd.Timestamp(t).tz_localize("UTC").isoformat()
        return {k: [iso(a), iso(b)] for k, (a, b) in self.periods.items()}
