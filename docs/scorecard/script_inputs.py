"""What the validation-year scripts here share: their period options, the model and store, the trees' P50."""
from __future__ import annotations

import argparse
from types import SimpleNamespace
from typing import Any

import numpy as np


def add_period(ap: argparse.ArgumentParser) -> None:
    """--from / --to of the validation year (Beijing time), as in the committed scorecards."""
    ap.add_argument("--from", dest="t_from", default="2015-03-01T00:00+08:00")
    ap.add_argument("--to", dest="t_to", default="2016-02-29T23:00+08:00")


def load(a: argparse.Namespace) -> tuple[Any, dict, Any, np.datetime64, np.datetime64]:
    """(network, its metadata, the store, first and last init in UTC) for `--model`, `--store` and the period;
    malloc keeps freed memory from here on, as in `aqcast evaluate` (M25)."""
    import torch

    from features.store import open_store
    from training import evaluate as ev
    from training.heap import retain_freed_memory

    torch.set_num_threads(2)
    retain_freed_memory()
    net, meta = ev.load_model(a.model)
    t0, _ = ev.parse_time(a.t_from, "--from")
    t1, _ = ev.parse_time(a.t_to, "--to")
    return net, meta, open_store(a.store), t0, t1


def at_input_stations(net, meta: dict, ds, inits: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """The network's quantiles [N, L, 2, 3, S_inputs] and the observations [N, L, 2, S_inputs] at the input
    stations for `inits`, with every station's name and the input stations' (what `gbt_p50` takes)."""
    from training import evaluate as ev

    inputs, _ = ev.station_split(ds, meta, None)
    q, obs, names = ev.forecast_at_stations(net, meta, ds, inits, inputs)
    names = list(names)
    at_inputs = np.isin(names, inputs)
    return q[..., at_inputs], obs[..., at_inputs], names, inputs


def gbt_p50(ds, meta: dict, inits: np.ndarray, inputs: list[str], names: list[str], n_l: int,
            t0: np.datetime64, store: str) -> np.ndarray:
    """The GBT reference's P50 [N, L, 2, S_inputs] at the input stations (fitted or read from the cache)."""
    from training import evaluate as ev
    from training.evaluate_gbt import gbt_forecast

    ds_p = ev.pad_time(ds, inits.min() - 24 * ev.HOUR, inits.max() + n_l * ev.HOUR)
    g, _ = gbt_forecast(ds_p, meta, inits, inputs, names, n_l, t0, store)
    return g[:, :, :, 1][..., np.isin(names, inputs)]


def model_options(description: str) -> argparse.ArgumentParser:
    """--model, --store, --every and the period: the options of the one-model scripts here."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--model", required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--every", type=int, default=6, help="hours between inits")
    add_period(ap)
    return ap


def network_and_trees(a: argparse.Namespace) -> SimpleNamespace:
    """For `--model` on the inits every `--every` h: the network's P50 `deep` and the GBT reference's `gbt`
    [N, L, 2, S_inputs], the observations `obs` where the trees forecast too, and `meta`, `ds`, `t0`, `inits`,
    `names`, `inputs`."""
    from training import evaluate as ev

    net, meta, ds, t0, t1 = load(a)
    inits = ev.init_times(t0, t1, a.every)
    q, obs, names, inputs = at_input_stations(net, meta, ds, inits)
    deep = q[:, :, :, 1]
    gbt = gbt_p50(ds, meta, inits, inputs, names, deep.shape[1], t0, a.store)
    return SimpleNamespace(deep=deep, gbt=gbt, obs=np.where(np.isfinite(gbt), obs, np.nan), meta=meta, ds=ds,
                           t0=t0, inits=inits, names=names, inputs=inputs)
