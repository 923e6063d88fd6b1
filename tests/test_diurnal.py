"""`model.diurnal_inputs`: each lead sees the cell's targets at the same local hour on the last day of the
history (the trees' diurnal persistence), exact at observed cells, spread elsewhere, history only."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_ensemble import CH, STATS, _inputs, _randomise, train_tiny

from models import build_model
from models.config import ModelConfig

CFG = {"history": 24, "leads": 50, "hidden": 8, "decoder_hidden": 8, "dilations": [1], "spread_sigmas": [1.0, 3.0],
       "spread_recent": 2, "spread_stride": 6, "history_forcing_stride": 6, "persistence_exact": True,
       "forcing_windows": [3], "diurnal_inputs": True}


def _net(members: int = 1, **kw):
    torch.manual_seed(0)
    net = build_model({**CFG, "members": members, **kw}, CH, STATS).eval()
    _randomise(net, 3)
    return net


def test_needs_a_day_of_history_and_picks_the_same_hour():
    with pytest.raises(ValueError, match="history >= 24"):
        ModelConfig(**{**CFG, "history": 12})
    idx = _net().diurnal_idx.tolist()
    # lead 1 is 23 h after the oldest hour's clock hour + 24: index 0; lead 24 is the init hour (23); then again
    assert idx[0] == 0 and idx[23] == 23 and idx[24] == 0 and idx[47] == 23 and idx[49] == 1
    assert all((lead - (i - 23)) % 24 == 0 for lead, i in zip(range(1, 51), idx, strict=True))


def test_same_hour_is_the_cells_own_value_where_observed_and_spread_elsewhere():
    net = _net()
    obs, mask, forcing, fmask, static = _inputs(net.cfg, b=1)
    mask.zero_()
    mask[0, 5, 0, 4, 4] = 1.0  # pm25 observed at one cell, 5 h into the history only
    obs = obs * mask + mask * 120.0
    _, base = net.state(obs, mask, forcing, fmask, static)
    same = net.same_hour(base)  # [B, L, (value, weight) x (pm25, o3), Y, X]
    lead = 5 + 1 - 0  # valid hour = same clock hour as history index 5 -> lead 6 (and 30)
    z = net.obs_norm(torch.full((1, 1, 4, 1, 1), 120.0), dim=2)[0, 0, 0, 0, 0]
    for ld in (lead, lead + 24):
        assert torch.isclose(same[0, ld - 1, 0, 4, 4], z) and same[0, ld - 1, 2, 4, 4] == 1.0
        assert 0 < same[0, ld - 1, 2, 4, 5] < 1 and same[0, ld - 1, 2, 0, 9] < 1e-3  # near / far cells
    others = [i for i in range(50) if i not in (lead - 1, lead + 23)]
    assert torch.all(same[0, others, 2] == 0)  # no observation at those hours: weight 0 everywhere
    assert torch.all(same[0, :, 1::2] == 0)  # no o3 at all


def test_the_skip_moves_the_p50_by_beta_times_yesterdays_value():
    net = _net()
    x = list(_inputs(net.cfg, b=1))
    x[1][0, :, 0, 4, 4] = 1.0  # pm25 observed every hour at one cell
    with torch.no_grad():
        net.d_proj.weight.zero_()
        net.beta.zero_()
        a = net.forward_normalized(*x)[0, :, 0, 1, 4, 4]
        net.beta[:, 0] = 0.5
        b = net.forward_normalized(*x)[0, :, 0, 1, 4, 4]
        _, base = net.state(*x)
        same = net.same_hour(base)[0, :, 0, 4, 4]
    torch.testing.assert_close(b - a, 0.5 * same, rtol=1e-4, atol=1e-4)


def test_station_path_matches_the_grid_for_one_net_and_an_ensemble():
    from training.module import check_station_forward

    for members in (1, 2):
        net = _net(members)
        x = _inputs(net.cfg)
        row, col = torch.tensor([[1, 4, 7], [0, 5, 8]]), torch.tensor([[2, 3, 9], [1, 6, 0]])
        batch = dict(zip(("obs", "obs_mask", "forcing", "forcing_mask", "static"), x, strict=True))
        assert check_station_forward(net, batch | {"station_row": row, "station_col": col}) < 1e-3


def test_a_diurnal_model_trains_and_exports(tiny_store_path: Path, tmp_path: Path, monkeypatch):
    from training.export import export_artifact

    net, meta = train_tiny(tiny_store_path, tmp_path / "home", monkeypatch, "model.diurnal_inputs=true")
    assert meta["model_config"]["diurnal_inputs"] is True and float(net.beta.abs().sum()) > 0  # it trained
    out = export_artifact(net, meta, tmp_path / "art")
    assert out.parity is not None and out.parity.max_abs_diff_random < 1e-2
