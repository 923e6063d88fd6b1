"""The CLI root: every command has --help, user errors exit 2 with one line, no traceback."""
from __future__ import annotations

import subprocess
import sys

import pytest

COMMANDS = ["synth", "train", "evaluate", "backtest", "promote", "export", "serve", "bento", "demo", "bench",
            "features build", "features info"]


def _aqcast(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from training.cli import main; main()", *args],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


def test_root_help_lists_every_command() -> None:
    out = _aqcast("--help")
    assert out.returncode == 0
    for cmd in COMMANDS:
        assert cmd.split()[0] in out.stdout


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_has_help(cmd: str) -> None:
    from typer.testing import CliRunner

    from training.cli import build_app

    res = CliRunner().invoke(build_app(), [*cmd.split(), "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output


def test_promote_unknown_version_is_a_clear_error(tmp_path, monkeypatch) -> None:
    import os

    env = dict(os.environ, AQCAST_HOME=str(tmp_path))
    out = _aqcast("promote", "7", env=env)
    assert out.returncode == 2
    assert "error:" in out.stderr and "version 7" in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_data_dir_exits_2_without_traceback(tmp_path) -> None:
    out = _aqcast("features", "build", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "s.zarr"))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert str(tmp_path / "nope") in out.stderr


@pytest.mark.parametrize("args, says", [(["forecast"], "No such command 'forecast'"),
                                        (["evaluate", "--nosuch"], "No such option: --nosuch")])
def test_usage_errors_exit_2_with_usage_not_traceback(args: list[str], says: str) -> None:
    out = _aqcast(*args)
    assert out.returncode == 2
    assert says in out.stderr and "Usage" in out.stderr
    assert "Traceback" not in out.stderr
