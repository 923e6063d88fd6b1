"""What `aqcast train` prints: Lightning's advertising tip is dropped, its own status lines are kept."""
from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from training.train import _NoAdverts, quiet_lightning_adverts

TRAINER = ("import lightning as L; from training.train import quiet_lightning_adverts as q; {}"
           "L.Trainer(logger=False, accelerator='cpu', enable_progress_bar=False)")


def _record(msg: str) -> logging.LogRecord:
    return logging.LogRecord("lightning.pytorch.utilities.rank_zero", logging.INFO, __file__, 1, msg, None, None)


def test_the_filter_drops_only_the_tip() -> None:
    f = _NoAdverts()
    assert not f.filter(_record("\N{ELECTRIC LIGHT BULB} Tip: For seamless cloud logging, try installing litlogger"))
    assert f.filter(_record("GPU available: False, used: False"))
    assert f.filter(_record("at 0.84 s a step the 12.5-min cap allows about 900 of the pinned schedule's steps"))


def test_installed_once() -> None:
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    quiet_lightning_adverts()
    quiet_lightning_adverts()
    assert sum(isinstance(f, _NoAdverts) for f in log.filters) == 1


def test_a_trainer_built_after_it_prints_no_tip() -> None:
    """In a fresh process, as `aqcast train` builds its Trainer: the tip is gone, Lightning's device lines stay."""
    loud = subprocess.run([sys.executable, "-c", TRAINER.format("")], capture_output=True, text=True, check=True)
    if "litlogger" not in loud.stderr + loud.stdout:
        pytest.skip("this Lightning version prints no litlogger tip")
    quiet = subprocess.run([sys.executable, "-c", TRAINER.format("q(); ")], capture_output=True, text=True,
                           check=True)
    assert "GPU available" in quiet.stderr + quiet.stdout
    assert "litlogger" not in quiet.stderr + quiet.stdout
