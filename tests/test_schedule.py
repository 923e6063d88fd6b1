"""The learning-rate schedule against the clock (`training/schedule.py`): the cosine fitted to the cap, the probe's
warning for a pinned one, and the end-of-training report of where the cap stopped it."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


def test_cosine_is_fitted_to_the_time_budget_and_kept_on_resume(tiny_store_path: Path) -> None:
    """The schedule shortens to what fits the budget (never beyond the plan), and checkpoints carry it."""
    from training.config import load_config
    from training.datamodule import AQDataModule
    from training.module import AQModule
    from training.schedule import budget_steps

    assert budget_steps(planned=2000, step=100, seconds_per_step=0.5, seconds_left=400) == 900
    assert budget_steps(planned=2000, step=100, seconds_per_step=0.1, seconds_left=400) == 2000
    assert budget_steps(planned=2000, step=100, seconds_per_step=0.5, seconds_left=-5) == 101
    cfg = load_config(TINY)
    dm = AQDataModule(cfg, tiny_store_path)
    dm.setup()
    a = AQModule(cfg, dm.channels, json.loads(dm.ds.attrs["norm_stats"]))
    a.sched_total = 900
    ckpt: dict = {}
    a.on_save_checkpoint(ckpt)
    b = AQModule(cfg, dm.channels, json.loads(dm.ds.attrs["norm_stats"]))
    assert b.sched_total is None
    b.on_load_checkpoint(ckpt)
    assert b.sched_total == 900
    assert AQModule(load_config(TINY, ["optim.schedule_steps=40"]), dm.channels,
                    json.loads(dm.ds.attrs["norm_stats"])).sched_total == 40


def test_a_pinned_schedule_the_cap_would_cut_short_is_kept_with_a_warning(tiny_store_path: Path, caplog,
                                                                            monkeypatch) -> None:
    """With `optim.schedule_steps` pinned the probe does not shorten the cosine, but says when the cap would stop
    training with the learning rate still high; an unpinned one is fitted and says nothing. The probe times the
    steps after the settling ones only, so a slow start does not count."""
    import training.schedule
    from training.config import load_config
    from training.datamodule import AQDataModule
    from training.module import AQModule

    dm = AQDataModule(load_config(TINY), tiny_store_path)
    dm.setup()
    clock = [1000.0]
    monkeypatch.setattr(training.schedule.time, "monotonic", lambda: clock[0])

    class Stepped(AQModule):
        global_step = 0  # no trainer: the probe reads the step count from here

    def probe(overrides: list[str], start_s: float = 0.0, per_step_s: float = 0.84) -> AQModule:
        """Steps 1-230, one batch end each; the first 100 take `start_s` in all, the rest `per_step_s` each."""
        m = Stepped(load_config(TINY, overrides), dm.channels, json.loads(dm.ds.attrs["norm_stats"]))
        m._planned = 2184
        m.on_train_start()
        for step in range(1, 231):
            clock[0] += start_s / 100 if step <= 100 else per_step_s
            m.global_step = step
            m.on_train_batch_end(None, None, 0)
        return m

    caplog.clear()
    with caplog.at_level("WARNING", logger="training.schedule"):
        pinned = probe(["optim.max_minutes=12.5", "optim.schedule_steps=2184"])  # 0.84 s a step: a slow VM
    assert pinned.sched_total == 2184
    assert any("pinned schedule's 2184" in r.getMessage() for r in caplog.records)
    assert "pinned schedule's 2184" in pinned.budget_warning  # repeated by `aqcast train` at the end
    caplog.clear()
    with caplog.at_level("WARNING", logger="training.schedule"):
        fitted = probe(["optim.max_minutes=12.5"])
        roomy = probe(["optim.max_minutes=60", "optim.schedule_steps=2184"])
        slow_start = probe(["optim.max_minutes=12.5", "optim.schedule_steps=2184"], start_s=60, per_step_s=0.4)
    assert fitted.sched_total is not None and fitted.sched_total < 2184  # fitted to the cap by the same probe
    assert roomy.sched_total == 2184
    assert not caplog.records
    assert fitted.budget_warning is None and roomy.budget_warning is None and slow_start.budget_warning is None


def test_training_end_says_where_the_cap_stopped_a_pinned_cosine(tiny_store_path: Path) -> None:
    """What `aqcast train` reports at the end is what happened: the step and learning rate where the clock cap
    stopped a pinned cosine, a warning only below 60 % of it, nothing when the cap did not stop training."""
    from types import SimpleNamespace

    from lightning.pytorch.callbacks import Timer

    from training.config import load_config
    from training.datamodule import AQDataModule
    from training.module import AQModule

    dm = AQDataModule(load_config(TINY), tiny_store_path)
    dm.setup()

    class Stopped(AQModule):
        global_step = 0
        trainer = None  # a stand-in: only its callbacks are read

    def finish(step: int, time_left: float) -> AQModule:
        m = Stopped(load_config(TINY, ["optim.max_minutes=12.5", "optim.schedule_steps=2184"]), dm.channels,
                    json.loads(dm.ds.attrs["norm_stats"]))
        m._planned, m.global_step, m.budget_warning = 2184, step, "the probe's forecast"
        timer = Timer(duration=dt.timedelta(minutes=12.5))
        timer.time_remaining = lambda *a: time_left  # type: ignore[method-assign]
        m.trainer = SimpleNamespace(callbacks=[timer])
        m.on_train_end()
        return m

    late, early, in_time = finish(1580, 0.0), finish(1000, 0.0), finish(1580, 30.0)
    assert "stopped training at step 1580 of the 2184-step cosine" in late.schedule_note
    assert late.budget_warning is None  # 72 % of the cosine: a note, not a warning
    assert "step 1000 of the 2184-step cosine" in early.budget_warning
    share = int(early.budget_warning.split("learning rate at ")[1].split("%")[0])
    assert share > int(late.schedule_note.split("learning rate at ")[1].split("%")[0]) > 5
    assert in_time.schedule_note is None and in_time.budget_warning is None  # the forecast did not come true
