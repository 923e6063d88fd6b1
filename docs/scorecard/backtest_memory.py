"""Where the backtest contract's memory goes: the resident set at each stage of one `run_backtest`.

    AQCAST_HOME=/tmp/bj python docs/scorecard/backtest_memory.py --model models:/aqcast/1 \
        --data ../shared/data/beijing --from 2015-03-01T00:00+08:00 --to 2016-02-25T00:00+08:00 \
        --points docs/scorecard/points-example.csv --out /tmp/bt/mem.csv [--plain-heap]

Prints the resident set after the model loads, before and after the store is built (and the store's size), at
every fourth chunk of inits, at the end, and the peak. malloc keeps freed memory as `aqcast backtest` has it (M25)
unless `--plain-heap`. Same rows as the command (the rolled band on, 30 days).
"""
from __future__ import annotations

import argparse
import resource
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for k in ("model", "data", "from", "to", "points", "out"):
        ap.add_argument(f"--{k}", required=True)
    ap.add_argument("--every", default="24h")
    ap.add_argument("--plain-heap", action="store_true")
    a = ap.parse_args()

    import psutil

    import training.backtest as bt
    from training.evaluate import load_model
    from training.heap import retain_freed_memory

    proc = psutil.Process()

    def say(tag: str) -> None:
        print(f"{tag}: resident {proc.memory_info().rss / 2**30:.2f} GB", flush=True)

    build, sampler = bt.build_store_for, bt.make_sampler
    calls = [0]

    def build_logged(*args, **kw):
        say("before the store")
        ds = build(*args, **kw)
        say(f"after the store ({ds.nbytes / 2**30:.2f} GB of arrays)")
        return ds

    def sampler_logged(*args, **kw):
        out = sampler(*args, **kw)
        calls[0] += 1
        if calls[0] % 4 == 1:
            say(f"chunk {calls[0]}")
        return out

    bt.build_store_for, bt.make_sampler = build_logged, sampler_logged
    if not a.plain_heap:
        retain_freed_memory()
    model, meta = load_model(a.model)
    say("model loaded")
    t0 = time.perf_counter()
    bt.run_backtest(model, meta, a.data, getattr(a, "from"), a.to, a.every, a.points, a.out, rolling_bands=30)
    say(f"end ({time.perf_counter() - t0:.0f} s)")
    print(f"peak: resident {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB")


if __name__ == "__main__":
    main()
