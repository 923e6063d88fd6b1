"""Training augmentation (training.augment): mirrored grids (`optim.mirror_prob`: the grid flips, the wind turns
with it, the stations move with their cells, and a training step runs on the mirrored batch) and noisy
observations (`optim.obs_noise`)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_module

from training.augment import mirror_batch, noisy_obs, random_mirror, wind_channels
from training.module import at_stations

FORCING = ["met_t2m", "met_u10", "met_v10", "met_ws"]


def _batch(b: int = 2, ny: int = 5, nx: int = 7) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"obs": torch.rand(b, 3, 2, ny, nx, generator=g), "obs_mask": (torch.rand(b, 3, 2, ny, nx, generator=g) > 0.5).float(),
            "forcing": torch.randn(b, 6, len(FORCING), ny, nx, generator=g), "forcing_mask": torch.ones(b, 6, len(FORCING), ny, nx),
            "static": torch.rand(b, 2, ny, nx, generator=g), "target": torch.rand(b, 3, 2, 3, generator=g),
            "station_row": torch.tensor([[0, 2, 4]] * b, dtype=torch.int32),
            "station_col": torch.tensor([[1, 6, 3]] * b, dtype=torch.int32)}


@pytest.mark.parametrize(("flip_y", "flip_x"), [(True, False), (False, True), (True, True)])
def test_stations_keep_their_cells_values_and_the_wind_turns_with_the_grid(flip_y: bool, flip_x: bool):
    b = _batch()
    u, v = wind_channels(FORCING)
    assert (u, v) == ([1], [2])
    m = mirror_batch(b, flip_y, flip_x, u, v)
    for k in ("obs", "obs_mask", "static"):  # every station sees its own cell's values
        torch.testing.assert_close(at_stations(m[k], m["station_row"], m["station_col"]),
                                   at_stations(b[k], b["station_row"], b["station_col"]))
    at = at_stations(m["forcing"], m["station_row"], m["station_col"])
    want = at_stations(b["forcing"], b["station_row"], b["station_col"])
    sign = torch.tensor([1.0, -1.0 if flip_x else 1.0, -1.0 if flip_y else 1.0, 1.0]).reshape(1, 1, 4, 1)
    torch.testing.assert_close(at, want * sign)
    assert torch.equal(m["target"], b["target"])  # station-indexed: does not move
    back = mirror_batch(m, flip_y, flip_x, u, v)
    for k, a in b.items():
        assert torch.equal(back[k], a), k


def test_the_upwind_neighbour_stays_upwind():
    """A plume one cell east of a station with an easterly wind (u < 0: air moving west, from the plume to the
    station) is, after a west-east flip, one cell west of it with a westerly wind: still upwind."""
    b = _batch(b=1)
    b["obs"].zero_()
    b["obs"][0, :, 0, 2, 4] = 100.0  # the plume east of the station at (2, 3)
    b["station_row"], b["station_col"] = torch.tensor([[2]]), torch.tensor([[3]])
    b["forcing"][:, :, 1] = -3.0  # u: air moving west
    m = mirror_batch(b, False, True, *wind_channels(FORCING))
    r, c = int(m["station_row"][0, 0]), int(m["station_col"][0, 0])
    u = float(m["forcing"][0, 0, 1, r, c])
    assert u == 3.0
    upwind = c - 1  # air moving east comes from the west
    assert float(m["obs"][0, 0, 0, r, upwind]) == 100.0


def test_prob_zero_returns_the_batch_and_draws_nothing():
    b = _batch()
    torch.manual_seed(3)
    assert random_mirror(b, 0.0, [1], [2]) is b
    after = torch.rand(1)
    torch.manual_seed(3)
    assert torch.equal(torch.rand(1), after)
    torch.manual_seed(0)
    seen = {(bool(m["station_row"][0, 0] != 0), bool(m["station_col"][0, 0] != 1))
            for m in (random_mirror(b, 0.5, [1], [2]) for _ in range(40))}
    assert seen == {(False, False), (True, False), (False, True), (True, True)}


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_training_steps_see_the_mirrored_batch(tiny_store_path: Path):
    from training.config import TrainConfig

    mod, dm = tiny_module(tiny_store_path, "optim.mirror_prob=0.5")
    batch = next(iter(dm.train_dataloader()))
    u, v = wind_channels(mod.channels["forcing"])
    assert u and v
    seed = next(s for s in range(100) if torch.manual_seed(s) is not None and bool((torch.rand(2) < 0.5).all()))
    torch.manual_seed(seed)
    with torch.no_grad():
        loss = mod.training_step(batch, 0)
        mirrored = mod.member_losses(mirror_batch(batch, True, True, u, v)).sum()
        plain = mod.member_losses(batch).sum()
    torch.testing.assert_close(loss, mirrored)
    assert not torch.isclose(loss, plain)
    torch.manual_seed(seed)
    loss = mod.training_step(batch, 0)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in mod.parameters() if p.grad is not None)
    with pytest.raises(ValueError, match="mirror_prob"):
        TrainConfig.model_validate({**mod.cfg.model_dump(), "optim": {**mod.cfg.optim.model_dump(), "mirror_prob": 0.7}})


def test_observation_noise_is_multiplicative_per_value_and_leaves_the_rest():
    b = _batch(b=64, ny=8, nx=8)
    b["obs"][:, :, :, 0, 0] = 0.0  # an unobserved cell
    torch.manual_seed(0)
    n = noisy_obs(b, 0.1)
    assert torch.equal(n["obs"][:, :, :, 0, 0], b["obs"][:, :, :, 0, 0])
    for k in b:
        if k != "obs":
            assert n[k] is b[k], k
    log_ratio = torch.log(n["obs"][..., 1:, 1:] / b["obs"][..., 1:, 1:])
    assert abs(float(log_ratio.std()) - 0.1) < 0.01 and abs(float(log_ratio.mean())) < 0.01
    hours = log_ratio[:, :-1].flatten(), log_ratio[:, 1:].flatten()  # consecutive hours: independent draws
    assert abs(float(torch.corrcoef(torch.stack(hours))[0, 1])) < 0.05
    torch.manual_seed(3)
    assert noisy_obs(b, 0.0) is b
    after = torch.rand(1)
    torch.manual_seed(3)
    assert torch.equal(torch.rand(1), after)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_training_steps_see_the_noisy_batch_and_validation_does_not(tiny_store_path: Path):
    mod, dm = tiny_module(tiny_store_path, "optim.obs_noise=0.2")
    batch = next(iter(dm.train_dataloader()))
    torch.manual_seed(5)
    with torch.no_grad():
        loss = mod.training_step(batch, 0)
    torch.manual_seed(5)
    with torch.no_grad():
        noisy = mod.member_losses(noisy_obs(batch, 0.2)).sum()
        plain = mod.member_losses(batch).sum()
    torch.testing.assert_close(loss, noisy)
    assert not torch.isclose(loss, plain)
    q1, q2 = mod.station_quantiles(batch), mod.station_quantiles(batch)
    assert torch.equal(q1, q2)  # inference draws no noise
    from training.config import TrainConfig

    with pytest.raises(ValueError, match="obs_noise"):
        TrainConfig.model_validate({**mod.cfg.model_dump(), "optim": {**mod.cfg.optim.model_dump(), "obs_noise": 1.5}})
