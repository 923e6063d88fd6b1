"""Where the shared real data lives.

Public API:
    shared_data_dir() -> Path
"""
from __future__ import annotations

import os
from pathlib import Path

_ENV = "AQCAST_SHARED_DATA"


def shared_data_dir() -> Path:
    """`$AQCAST_SHARED_DATA` if set, else `../shared/data` beside the project checkout."""
    env = os.environ.get(_ENV)
    if env:
        return Path(env).expanduser()
    return (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()
