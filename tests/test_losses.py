"""masked_pinball: exact masking, gathering at station cells, quantile behaviour."""
import torch

from models.losses import gather_stations, level_weights, masked_pinball

torch.set_num_threads(1)


def _case(seed=0):
    g = torch.Generator().manual_seed(seed)
    b, n_l, ny, nx, s = 2, 5, 6, 7, 4
    pred = (torch.rand(b, n_l, 2, 3, ny, nx, generator=g) * 100).sort(dim=3).values.requires_grad_(True)
    target = torch.rand(b, n_l, 2, s, generator=g) * 100
    mask = (torch.rand(b, n_l, 2, s, generator=g) > 0.4).float()
    row = torch.randint(0, ny, (b, s), generator=g)
    col = torch.randint(0, nx, (b, s), generator=g)
    return pred, target, mask, row, col


def test_unobserved_targets_change_nothing():
    for space in ("log1p", "sqrt", "linear"):
        pred, target, mask, row, col = _case()
        loss1 = masked_pinball(pred, target, mask, row, col, space=space)
        (g1,) = torch.autograd.grad(loss1, pred)
        t2 = target.clone()
        t2[mask == 0] = torch.tensor(float("nan"))
        t2[(mask == 0) & (torch.rand_like(t2) > 0.5)] = 1e6
        loss2 = masked_pinball(pred, t2, mask, row, col, space=space)
        (g2,) = torch.autograd.grad(loss2, pred)
        assert torch.equal(loss1, loss2)
        assert torch.equal(g1, g2)
        assert torch.isfinite(g1).all()


def test_gather_picks_station_cells():
    pred, _, _, row, col = _case()
    got = gather_stations(pred, row, col)
    for b in range(pred.shape[0]):
        for s in range(row.shape[1]):
            assert torch.equal(got[b, ..., s], pred[b, ..., row[b, s], col[b, s]])


def test_gradient_only_at_station_cells():
    pred, target, mask, row, col = _case()
    (g,) = torch.autograd.grad(masked_pinball(pred, target, mask, row, col), pred)
    cells = torch.zeros(pred.shape[-2:], dtype=torch.bool)
    cells[row.flatten(), col.flatten()] = True
    assert (g[..., ~cells] == 0).all()


def test_pinball_values_linear():
    pred = torch.zeros(1, 1, 2, 3, 1, 1)
    target = torch.full((1, 1, 2, 1), 10.0)
    mask = torch.ones(1, 1, 2, 1)
    idx = torch.zeros(1, 1, dtype=torch.long)
    loss = masked_pinball(pred, target, mask, idx, idx, space="linear")
    assert torch.isclose(loss, torch.tensor(10.0 * (0.1 + 0.5 + 0.9) / 3))
    assert masked_pinball(pred, target, torch.zeros_like(mask), idx, idx) == 0


def test_species_scale_divides_each_species_before_the_transform():
    pred = torch.zeros(1, 1, 2, 3, 1, 1)
    pred[:, :, :, 1] = 10.0  # P10 = P90 = 0, P50 = 10 for both species; target 30
    target = torch.full((1, 1, 2, 1), 30.0)
    mask = torch.ones(1, 1, 2, 1)
    idx = torch.zeros(1, 1, dtype=torch.long)
    plain = masked_pinball(pred, target, mask, idx, idx)
    assert torch.equal(plain, masked_pinball(pred, target, mask, idx, idx, species_scale=(1.0, 1.0)))
    scaled = masked_pinball(pred, target, mask, idx, idx, species_scale=(1.0, 40.0))
    pm25 = 0.1 * torch.log1p(torch.tensor(30.0)) + 0.5 * (torch.log1p(torch.tensor(30.0)) - torch.log1p(
        torch.tensor(10.0))) + 0.9 * torch.log1p(torch.tensor(30.0))
    o3 = 0.1 * torch.log1p(torch.tensor(0.75)) + 0.5 * (torch.log1p(torch.tensor(0.75)) - torch.log1p(
        torch.tensor(0.25))) + 0.9 * torch.log1p(torch.tensor(0.75))
    assert torch.isclose(scaled, (pm25 + o3) / 6)
    assert scaled < plain  # ozone's error of 20 at 10 -> 30 counts less when 40 ug m-3 is the scale


def test_station_weight_is_a_weighted_mean_over_stations():
    pred = torch.zeros(2, 1, 2, 3, 1, 2)
    target = torch.rand(2, 1, 2, 2) * 50
    mask = torch.ones(2, 1, 2, 2)
    row, col = torch.zeros(2, 2, dtype=torch.long), torch.tensor([[0, 1], [0, 1]])
    per = [masked_pinball(pred, target, mask * (torch.arange(2) == s), row, col) for s in range(2)]
    both = masked_pinball(pred, target, mask, row, col)
    assert torch.equal(both, masked_pinball(pred, target, mask, row, col, station_weight=torch.ones(2, 2)))
    w = torch.tensor([[3.0, 1.0], [3.0, 1.0]])  # station 0 counts three times station 1
    torch.testing.assert_close(masked_pinball(pred, target, mask, row, col, station_weight=w),
                               (3 * per[0] + per[1]) / 4)
    assert not torch.isclose(both, (3 * per[0] + per[1]) / 4)


def test_level_power_weighs_entries_by_their_own_detached_median():
    pred = torch.zeros(1, 1, 2, 3, 1, 2)
    pred[0, 0, :, 1, 0, 0], pred[0, 0, :, 1, 0, 1] = 8.0, 80.0  # P50 8 at station 0, 80 at station 1
    pred.requires_grad_(True)
    target = torch.tensor([[[[20.0, 200.0], [20.0, 200.0]]]])
    mask, row, col = torch.ones(1, 1, 2, 2), torch.zeros(1, 2, dtype=torch.long), torch.tensor([[0, 1]])
    plain = masked_pinball(pred, target, mask, row, col)
    assert torch.equal(plain, masked_pinball(pred, target, mask, row, col, level_power=0.0))
    per = [masked_pinball(pred, target, mask * (torch.arange(2) == s), row, col) for s in range(2)]
    w = torch.tensor([9.0, 81.0]) ** 0.5  # (1 + P50)^0.5: 3 and 9, mean 6 per species
    weighted = masked_pinball(pred, target, mask, row, col, level_power=0.5)
    torch.testing.assert_close(weighted, (w[0] * per[0] + w[1] * per[1]) / w.sum())
    assert weighted > plain  # the worse-forecast high case (80 against 200) now counts 3 times the low one
    (g,) = torch.autograd.grad(weighted, pred)  # the weight is detached: the median's gradient is the pinball's
    # d/dp of 0.5 |log1p t - log1p p| at p < t is -0.5 / (1 + p), times the entry's weight 9 / 6 over the total
    # weight of the 12 entries (2 species x 3 quantiles x (0.5 + 1.5))
    torch.testing.assert_close(g[0, 0, 0, 1, 0, 1], torch.tensor(-0.5 / 81.0 * 1.5 / 12.0))
    keep = torch.tensor([[[[[1.0, 1.0]], [[1.0, 0.0]]]]]).bool()  # O3 observed at station 0 only: its weight 1
    lw = level_weights(pred.detach().reshape(1, 1, 2, 3, 2), keep, 1, 0.5)
    torch.testing.assert_close(lw[0, 0, :, 0], torch.tensor([[0.5, 1.5], [1.0, 3.0]]))
    pred_nan_target = target.clone()
    pred_nan_target[0, 0, 1, 1] = float("nan")  # an unobserved target changes neither weights nor loss
    mask2 = mask.clone()
    mask2[0, 0, 1, 1] = 0.0
    a = masked_pinball(pred, target, mask2, row, col, level_power=0.5)
    b = masked_pinball(pred, pred_nan_target, mask2, row, col, level_power=0.5)
    assert torch.equal(a, b) and torch.isfinite(a)


def test_median_stop_grad_keeps_the_tails_losses_off_the_median_in_training_only():
    """With `model.median_stop_grad`, P10/P90 still equal P50 -/+ the gaps, but their gradient reaches only the
    gaps while training; evaluation (and so the export) is the same function with the usual gradient."""
    from models import build_model
    from models.config import ModelConfig

    stats = {v: {"mean": 0.0, "std": 1.0, "log1p": v.startswith(("obs_", "stn_"))} for v in
             ("obs_pm25", "obs_o3", "stn_pm25", "stn_o3", "met_t2m")}
    ch = {"obs": ["obs_pm25", "obs_o3"], "forcing": ["met_t2m"], "static": []}
    shape = (2, 4, 2, 3, 3)
    for flag in (False, True):
        torch.manual_seed(0)
        net = build_model(ModelConfig(hidden=4, decoder_hidden=4, history=4, leads=4, dilations=[1],
                                      spread_sigmas=[1.0], median_stop_grad=flag), ch, stats)
        p50, g_lo, g_hi = (torch.rand(shape, requires_grad=True) for _ in range(3))
        for training in (True, False):
            net.train(training)
            q = net.quantiles(p50, g_lo, g_hi)
            q[:, :, :, 0].sum().backward()  # the P10's loss alone
            assert g_lo.grad.abs().sum() > 0
            assert (p50.grad.abs().sum() == 0) == (flag and training)
            p50.grad, g_lo.grad = None, None
        net.train(True)
        with torch.no_grad():
            on = net.quantiles(p50, g_lo, g_hi)
        net.eval()
        with torch.no_grad():
            torch.testing.assert_close(net.quantiles(p50, g_lo, g_hi), on)
