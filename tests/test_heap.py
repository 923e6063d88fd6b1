"""training.heap: a training step's freed blocks are reused instead of faulted in again (fresh processes)."""
from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")

# a miniature of the encoder's step: a 1 x 1 stem over a concatenated 52 MB input (above glibc's 32 MB ceiling for
# serving blocks from the heap on its own), a 3 x 3 conv, backward
PROBE = """
import resource, sys, torch
if sys.argv[1] == "1":
    from training.heap import retain_freed_memory
    assert retain_freed_memory() and retain_freed_memory()
torch.set_num_threads(1)
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(1024, 48, 1), torch.nn.GELU(), torch.nn.Conv2d(48, 48, 3, padding=1))
def step():
    x = torch.randn(16, 512, 31, 26)
    net(torch.cat([x, x], 1)).square().mean().backward()
for _ in range(3):
    step()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""


def _faults(retain: bool) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, "1" if retain else "0"], capture_output=True, text=True,
                         check=True)
    return int(out.stdout.split()[-1])


def test_retained_heap_reuses_a_training_steps_freed_blocks_instead_of_faulting_them_in_again():
    without, with_ = _faults(False), _faults(True)
    assert without > 10 * (52 << 20) // 4096  # glibc maps and unmaps at least the 52 MB block every step
    assert with_ < without / 10
