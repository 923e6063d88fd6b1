"""Weight averaging after early stopping (training/averaging.py, `optim.average_weights`)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from training.averaging import TailAverage

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def _feed(cb: TailAverage, net: torch.nn.Module, losses: list[float], start: int = 0) -> list[dict]:
    """Validate after setting the weights to k+1 at steps 10, 20, ...; -> the snapshots fed."""
    seen = []
    for i, v in enumerate(losses, start=start):
        with torch.no_grad():
            net.weight.fill_(float(i + 1))
        seen.append({k: t.clone() for k, t in net.state_dict().items()})
        tr = SimpleNamespace(sanity_checking=False, callback_metrics={"val_loss": torch.tensor(v)},
                             global_step=10 * (i + 1))
        cb.on_validation_end(tr, net)
    return seen


def test_tail_average_restarts_at_each_new_best_and_keeps_the_final_weights() -> None:
    net = torch.nn.Linear(3, 2)
    net.register_buffer("const", torch.full((4,), 0.1))  # equal in every snapshot: must come back bit-identical
    cb = TailAverage()
    _feed(cb, net, [3.0, 2.0, 2.5, 2.2])  # best at the 2nd validation: mean of weights 2, 3, 4
    assert cb.steps == [20, 30, 40]
    avg = cb.averaged()
    assert torch.allclose(avg["weight"], torch.full((2, 3), 3.0, dtype=torch.float64))
    assert torch.equal(avg["const"].float(), net.const) and torch.equal(avg["bias"].float(), net.bias.detach())
    with torch.no_grad():
        net.weight.fill_(7.0)  # stopped at the time cap between validations: the final weights count too
    cb.on_train_end(SimpleNamespace(global_step=45), net)
    assert cb.steps == [20, 30, 40, 45]
    assert torch.allclose(cb.averaged()["weight"], torch.full((2, 3), 4.0, dtype=torch.float64))
    _feed(cb, net, [1.5], start=5)  # a new best restarts the average
    assert cb.steps == [60] and torch.allclose(cb.averaged()["weight"], torch.full((2, 3), 6.0, dtype=torch.float64))


def test_tail_average_state_round_trips_for_resume() -> None:
    net = torch.nn.Linear(3, 2)
    a = TailAverage()
    _feed(a, net, [2.0, 2.5])
    b = TailAverage()
    b.load_state_dict(a.state_dict())
    _feed(a, net, [2.4], start=2)
    _feed(b, net, [2.4], start=2)
    assert a.steps == b.steps == [10, 20, 30]
    assert all(torch.equal(a.averaged()[k], b.averaged()[k]) for k in a.averaged())


def test_ema_and_average_weights_are_exclusive() -> None:
    from features.errors import DataError
    from training.config import load_config

    with pytest.raises(DataError, match="key 'optim': ema_decay and average_weights both average"):
        load_config(TINY, ["optim.ema_decay=0.9", "optim.average_weights=tail"])


def _train(tmp_path: Path, store: Path, name: str, *extra: str) -> dict:
    from training.config import load_config
    from training.train import run_training

    cfg = load_config(TINY, ["optim.max_epochs=3", "optim.patience=3", "optim.val_check_interval=0.5",
                             "optim.schedule=none",
                             "tracking.log_plots=false", *extra])
    return run_training(cfg, store=str(store), run_name=name, echo=lambda s: None)


@pytest.mark.parametrize("method", ["tail", "best_last"])
def test_registered_model_holds_the_averaged_weights(method: str, tmp_path: Path, tiny_store_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The registered weights are the mean the method names (steps on its model card), not the best epoch's."""
    from training import train
    from training.tracking import load_model

    monkeypatch.setenv("AQCAST_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    seen: dict[int, torch.Tensor] = {}  # the weights TailAverage was given, by step
    add = TailAverage._add

    def spy(self: TailAverage, pl_module: torch.nn.Module, step: int, restart: bool) -> None:
        seen[step] = pl_module.state_dict()["net.head.weight"].detach().double().clone()
        add(self, pl_module, step, restart)

    monkeypatch.setattr(TailAverage, "_add", spy)
    choose = train.choose_weights

    def final_spy(method: str, module: torch.nn.Module, *a: object) -> dict:
        seen[-1] = module.state_dict()["net.head.weight"].detach().double().clone()  # the weights training ended with
        return choose(method, module, *a)

    monkeypatch.setattr(train, "choose_weights", final_spy)
    run = _train(tmp_path, tiny_store_path, method, f"optim.average_weights={method}")
    net, meta = load_model(run["uri"])
    card = meta["weight_averaging"]
    ck = torch.load(Path(run["run_dir"]) / "best.ckpt", weights_only=False)
    assert card["method"] == method and card["best_step"] == ck["global_step"]
    assert card["n"] == len(card["steps"]) >= 2 and card["steps"][0] == card["best_step"]
    got = net.state_dict()["head.weight"].double()
    best = ck["state_dict"]["net.head.weight"].double()
    assert not torch.allclose(got, best, atol=1e-4)
    final = seen.pop(-1)
    if method == "best_last":
        assert not seen  # no running average unless asked for
        assert card["steps"] == [card["best_step"], run["global_step"]]
        want = 0.5 * (best + final)
    else:
        # validations at batches 2 and 4 of each 5-batch epoch, then the final step-15 weights (no validation)
        assert sorted(seen) == [2, 4, 7, 9, 12, 14, 15] and torch.equal(seen[15], final)
        assert card["steps"] == [s for s in sorted(seen) if s >= card["best_step"]]
        assert torch.equal(seen[card["best_step"]], best)
        want = torch.stack([seen[s] for s in card["steps"]]).mean(0)
    assert torch.allclose(got, want, atol=1e-6)
