"""Synthetic-world ablation scoring (`training.ablation`): table layout and scoring against the true field."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from features.windows import WindowSampler
from models import build_model
from training.ablation import (
    GROUPS,
    SPECIES,
    markdown_tables,
    model_forecaster,
    rows_of,
    score,
    score_model,
    station_cells,
    validation_inits,
    write_markdown,
)

torch.set_num_threads(1)
SMALL = {"history": 6, "leads": 24, "hidden": 8, "decoder_hidden": 8, "dilations": [1, 2],
         "spread_sigmas": [1.0, 3.0], "spread_recent": 2, "spread_stride": 2, "history_forcing_stride": 2}


@pytest.fixture(scope="module")
def store(tiny_store):
    """tiny_store + truth_pm25 / truth_o3: a smooth field that equals nothing the model sees."""
    ds = tiny_store.copy(deep=True)
    rng = np.random.default_rng(3)
    _nt, ny, nx = ds.sizes["time"], ds.sizes["y"], ds.sizes["x"]
    for k, p in enumerate(SPECIES):
        base = np.nanmean(ds[f"stn_{p}"].values, axis=1)[:, None, None]
        field = np.nan_to_num(base, nan=40.0) * (1 + 0.2 * rng.random((1, ny, nx))) + k
        ds[f"truth_{p}"] = (("time", "y", "x"), field.astype(np.float32), {"role": "truth", "units": "ug m-3"})
    return ds


@pytest.fixture(scope="module")
def tiny_model(store):
    from models.config import ModelConfig

    s = WindowSampler(store, validation_inits(store, 12, 6, 24)[:1], history=6, leads=24)
    ch = {"obs": s.obs_vars, "forcing": s.forcing_vars, "static": s.static_vars}
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SMALL), ch, json.loads(store.attrs["norm_stats"])).eval()
    return model, {"history": 6, "leads": 24, "channels": ch}


def test_validation_inits_after_train_period(store):
    inits = validation_inits(store, 12, 6, 24)
    assert inits.size > 0
    assert (inits > np.datetime64("2021-01-14T23:00", "ns")).all()
    assert ((inits.astype("datetime64[h]").astype(int)) % 12 == 0).all()


def test_table_shape_and_keys(store, tiny_model):
    model, meta = tiny_model
    rows = score_model(model, meta, store, "tiny", every_h=12, batch_size=4)
    assert len(rows) == len(GROUPS) * len(SPECIES) * 1  # leads=24 -> one lead window
    keys = {"model", "group", "species", "lead", "n", "mae", "mae_idw_persistence", "mae_climatology",
            "mae_idw_diurnal_persistence",
            "skill_idw_persistence", "skill_climatology"}
    assert all(set(r) == keys for r in rows)
    assert {(r["group"], r["species"]) for r in rows} == {(g, s) for g in GROUPS for s in SPECIES}
    n_cells = {"station": int(station_cells(store).sum()), "no_station": int((~station_cells(store)).sum())}
    n_inits = validation_inits(store, 12, 6, 24).size
    for r in rows:
        assert r["lead"] == 24 and r["n"] == n_inits * 24 * n_cells[r["group"]]
        assert np.isfinite(r["mae"]) and r["mae"] > 0
        assert np.isclose(r["skill_idw_persistence"], 1 - r["mae"] / r["mae_idw_persistence"])
    md = markdown_tables(rows, ["note"])
    assert "cells with no station" in md and "station cells" in md and "IDW persistence" in md


def test_perfect_forecast_scores_zero_against_truth(store, tiny_model):
    """A 'model' returning the true field gets MAE 0 at every cell: scores are computed against truth_*."""
    model, _meta = tiny_model
    inits = validation_inits(store, 12, 6, 24)
    sampler = WindowSampler(store, inits, history=6, leads=24, drop_prob=0.0)
    times = store["time"].values
    truth = np.stack([store[f"truth_{p}"].values for p in SPECIES], 1)

    def perfect(s, idx):
        t = ((s.init_times[list(idx)] - times[0]) // np.timedelta64(1, "h")).astype(int)
        return truth[t[:, None] + np.arange(1, 25)[None, :]]

    rows = rows_of(score(store, perfect, sampler, inits), "perfect")
    assert all(r["mae"] == 0 and r["skill_idw_persistence"] == 1 for r in rows)
    assert all(r["mae_idw_persistence"] > 0 for r in rows)
    # a forecast off by +5 everywhere has MAE 5 at no-station cells too
    rows = rows_of(score(store, lambda s, i: perfect(s, i) + 5, sampler, inits), "off")
    assert all(np.isclose(r["mae"], 5, atol=1e-3) for r in rows)
    # the real model's forecaster runs on the same sampler
    assert model_forecaster(model, 4)(sampler, [0, 1]).shape == (2, 24, 2, 16, 16)


def test_store_without_truth_is_a_data_error(tiny_store, tiny_model):
    from features.errors import DataError

    model, meta = tiny_model
    with pytest.raises(DataError, match="truth"):
        score_model(model, meta, tiny_store, "x", every_h=24)


def test_markdown_markers_keep_prose(tmp_path):
    p = tmp_path / "a.md"
    write_markdown(p, "table one")
    p.write_text(p.read_text() + "\n## Reading\nprose\n")
    write_markdown(p, "table two")
    text = p.read_text()
    assert "table two" in text and "table one" not in text and "prose" in text
