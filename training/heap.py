"""Keep freed memory in the process heap in training and verification (glibc only).

Each training step allocates and frees tens of arrays of 10-50 MB (the encoder's 1010-channel input, its
activations and their gradients). glibc serves blocks that large with a fresh `mmap` and returns them on
`free`, so every step touches its pages anew: on the Beijing config about 1.8 million page faults in 18 steps,
which a virtual machine pays dearly for. Disabling `mmap` for allocations and raising the trim threshold keeps
those pages in the heap and reuses them (decision M23: 0.88 -> 0.71 s a step, median of three runs, on the
2-core AMD VM of the tenth round). The same as starting Python with MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=1073741824, but set from inside the process, so `aqcast train` needs no wrapper.
Resident memory then stays near its peak (+3 % in training). The verification commands, whose grid-wide
forward passes allocate the same way, do it too (M25: `aqcast backtest` of a month every 6 h 46 -> 30 s, peak
memory 4.5 -> 5.3-6.0 GB).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_BYTES = 1 << 30


def retain_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed blocks for reuse; True if it took effect (False off glibc/Linux).

    Process-wide; calling it again sets the same values. Called by `aqcast train` before the first batch and
    by `aqcast evaluate` and `aqcast backtest` before the first forecast (M25), never at import."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_BYTES))
    if ok:
        logging.getLogger(__name__).info("malloc keeps freed memory for reuse (no mmap, trim at 1 GiB)")
    return ok
