"""`aqcast bench`: ONNX Runtime vs PyTorch eager, full-grid forecast times, `/forecast` latency under load.

A command, never a timed test; results go to docs/benchmarks.md by hand. `--quick` shortens every part.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import typer


def model_for_store(ds: Any, cfg: Mapping[str, Any] | None = None, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """An (untrained) AQNet with the store's channels and norm stats + the metadata `export_artifact` wants."""
    import torch

    from features.windows import default_forcing_vars, default_obs_vars, default_static_vars
    from models import build_model

    channels = {"obs": default_obs_vars(ds), "forcing": default_forcing_vars(ds), "static": default_static_vars(ds)}
    torch.manual_seed(seed)
    model = build_model(dict(cfg or {}), channels, ds.attrs["norm_stats"]).eval()
    meta = {"channels": channels, "grid": ds.attrs["grid"], "norm_stats": ds.attrs["norm_stats"],
            "roles": json.loads(ds.attrs.get("roles", "{}")), "train_window": ds.attrs.get("train_period"),
            "name": "aqcast-untrained"}
    return model, meta


def _timeit(fn: Callable[[], Any], repeat: int, warmup: int = 1) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    q = np.percentile(ts, [25, 50, 75])
    return {"median_s": float(q[1]), "p25_s": float(q[0]), "p75_s": float(q[2]), "min_s": float(min(ts)),
            "n": repeat}


def matmul_rate(threads: int, n: int = 1024, repeat: int = 5) -> float:
    """Measured dense fp32 GFLOP/s (numpy matmul) — the machine's attainable rate for conv-like work."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    t = _timeit(lambda: a @ a, repeat)
    return 2 * n**3 / t["median_s"] / 1e9


def model_flops(onnx_path: Path, inputs: Mapping[str, np.ndarray]) -> float:
    """Conv/MatMul/Gemm multiply-adds x 2 of one forward pass, from the graph with inferred shapes."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(onnx_path))
    for inp in model.graph.input:  # pin the dynamic dims to the benchmark shape
        shape = inputs[inp.name].shape
        for d, s in zip(inp.type.tensor_type.shape.dim, shape):
            d.ClearField("dim_param")
            d.dim_value = int(s)
    model = shape_inference.infer_shapes(model, data_prop=True)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input)}
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    total = 0.0
    for node in model.graph.node:
        if node.op_type == "Conv":
            w = inits.get(node.input[1]) or shapes.get(node.input[1])
            out = shapes.get(node.output[0])
            if w and out and all(out):
                total += 2.0 * np.prod(out) * np.prod(w[1:])
        elif node.op_type in ("MatMul", "Gemm"):
            a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
            if a and out and all(out) and all(a):
                total += 2.0 * np.prod(out) * a[-1]
    return float(total)


def bench_engines(model: Any, onnx_path: Path, inputs: Mapping[str, np.ndarray], threads: int,
                  repeat: int) -> dict[str, Any]:
    """ORT vs PyTorch eager on the same inputs and threads."""
    import torch

    from models.artifact import INPUT_NAMES
    from serving.forecaster import ort_session

    torch.set_num_threads(threads)
    sess = ort_session(onnx_path, threads)
    tin = [torch.from_numpy(inputs[n]) for n in INPUT_NAMES]

    def eager() -> Any:
        with torch.inference_mode():
            return model(*tin)

    res = {"ort": _timeit(lambda: sess.run(None, dict(inputs)), repeat),
           "eager": _timeit(eager, repeat, warmup=3)}
    res["speedup"] = res["eager"]["median_s"] / res["ort"]["median_s"]
    return res


def synthetic_setup(work: Path, ny: int = 24, nx: int = 24, days: int = 5, cfg: Mapping[str, Any] | None = None,
                    seed: int = 0) -> tuple[Any, Path, Path]:
    """Beijing-sized synthetic store (zarr) + untrained default AQNet exported to ONNX: (model, store, artifact)."""
    import pandas as pd
    import xarray as xr

    from features.grid import Grid
    from training.export import export_artifact

    rng = np.random.default_rng(seed)
    grid = Grid(lon_0=116.0, lat_0=40.0, res_m=3000, x0=-36000.0, y0=-36000.0, nx=nx, ny=ny)
    time_ = pd.date_range("2021-01-01", periods=24 * days, freq="h").values.astype("datetime64[ns]")
    nt, ns = time_.size, 12
    lon2d, lat2d = grid.centres_lonlat()
    srow, scol = rng.integers(0, ny, ns).astype(np.int32), rng.integers(0, nx, ns).astype(np.int32)
    ds = xr.Dataset(coords={"time": time_, "y": grid.y, "x": grid.x, "lon": (("y", "x"), lon2d),
                            "lat": (("y", "x"), lat2d), "station": [f"S{k:02d}" for k in range(ns)],
                            "station_row": ("station", srow), "station_col": ("station", scol)})
    roles, stats = {}, {}
    for p, mu in {"pm25": 60, "pm10": 90, "so2": 10, "no2": 40, "co": 900, "o3": 50}.items():
        v = rng.gamma(3.0, mu / 3.0, (nt, ns)).astype(np.float32)
        g = np.full((nt, ny, nx), np.nan, np.float32)
        g[:, srow, scol] = v
        ds[f"stn_{p}"], ds[f"qc_{p}"] = (("time", "station"), v), (("time", "station"), np.zeros((nt, ns), np.uint8))
        ds[f"obs_{p}"] = (("time", "y", "x"), g)
        roles[f"stn_{p}"] = "target" if p in ("pm25", "o3") else "observed"
        stats[f"obs_{p}"] = {"mean": mu, "std": mu / 2, "mean_log1p": float(np.log1p(mu)), "std_log1p": 0.6}
    for v, (mu, sd) in {"t2m": (5, 8), "d2m": (-5, 8), "sp": (1010, 8), "tp": (0.1, 0.5), "u10": (0, 3),
                        "v10": (0, 3), "ws": (3, 2), "rh": (50, 20), "blh": (700, 400), "ssr": (150, 200)}.items():
        ds[f"met_{v}"] = (("time", "y", "x"), (mu + sd * rng.standard_normal((nt, ny, nx))).astype(np.float32))
        stats[f"met_{v}"], roles[f"met_{v}"] = {"mean": mu, "std": sd}, "forcing"
    for e in ("nox", "so2", "voc", "nh3", "pm25"):
        ds[f"emis_{e}"] = (("time", "y", "x"), rng.gamma(2.0, 1.0, (nt, ny, nx)).astype(np.float32))
        stats[f"emis_{e}"], roles[f"emis_{e}"] = {"mean": 2.0, "std": 1.4}, "forcing"
    ds["sat_aod"] = (("time", "y", "x"), rng.uniform(0.1, 1.0, (nt, ny, nx)).astype(np.float32))
    ds["static_elevation"] = (("y", "x"), rng.uniform(20, 1500, (ny, nx)).astype(np.float32), {"role": "static"})
    stats |= {"sat_aod": {"mean": 0.5, "std": 0.3}, "static_elevation": {"mean": 500, "std": 400}}
    ds.attrs = {"grid": grid.to_json(), "roles": json.dumps(roles), "norm_stats": json.dumps(stats),
                "train_period": json.dumps([str(time_[0]) + "+00:00", str(time_[-1]) + "+00:00"]),
                "source_utc_offset": "+08:00", "synthetic": "true",
                "provenance": json.dumps({"sources": [], "code_version": "bench", "command": "aqcast bench"})}
    store = work / "store.zarr"
    ds.to_zarr(store, mode="w", consolidated=True, zarr_format=2)
    model, meta = model_for_store(ds, cfg, seed)
    art = work / "artifact"
    export_artifact(model, meta | {"store": str(store)}, art)
    return model, store, art


def bench_big(art: Path, n: int, tile: int, threads: int) -> dict[str, Any]:
    """72 h forecast on an n x n grid, tiled (tile + halo), inputs sliced from one random tile-sized block."""
    import resource

    from models.artifact import ModelCard
    from serving.forecaster import ort_session, predict_tiled
    from training.export import random_inputs

    card = ModelCard.read(art)
    halo = card.receptive_field_cells or 48
    side = min(n, tile + 2 * halo)
    block = random_inputs(card.channels, card.history, card.leads, side, side, 1, 0, card.norm_stats)
    sess = ort_session(art / "model.onnx", threads)
    out = np.empty((1, card.leads, 2, 3, n, n), np.float32)
    t0 = time.perf_counter()
    predict_tiled(sess, lambda r, c: {k: v[..., :r.stop - r.start, :c.stop - c.start] for k, v in block.items()},
                  n, n, tile, halo, out)
    took = time.perf_counter() - t0
    n_tiles = (-(-n // tile)) ** 2
    return {"n": n, "cells": n * n, "tile": tile, "halo": halo, "tiles": n_tiles, "seconds": took,
            "output_gb": out.nbytes / 1e9, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
            "computed_cells_ratio": n_tiles * side**2 / (n * n)}


async def _load(url: str, body: dict[str, Any], rate: float, duration: float) -> dict[str, Any]:
    """Open-loop load: one request every 1/rate s for `duration` s (at most 256 in flight)."""
    import asyncio

    import httpx

    lat: list[float] = []
    errors = 0
    sem = asyncio.Semaphore(256)
    async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=256)) as client:
        async def one() -> None:
            nonlocal errors
            async with sem:
                t0 = time.perf_counter()
                try:
                    r = await client.post(url + "/forecast", json=body)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                lat.append(time.perf_counter() - t0)
                errors += 0 if ok else 1
        start, tasks = time.perf_counter(), []
        for i in range(int(rate * duration)):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - start
    ms = np.array(lat) * 1e3
    return {"rate": rate, "requests": len(lat), "errors": errors, "achieved_rps": len(lat) / wall,
            "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max())}


def bench_load(art: Path, store: Path, work: Path, rates: list[float], duration: float) -> dict[str, Any]:
    """Point requests against a real `bentoml serve` on 127.0.0.1."""
    import asyncio
    import socket

    from serving.cli import server_env, start_server, stop_server, wait_ready

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = server_env(model_dir=art, store=store, extra={"BENTOML_HOME": str(work / "bentoml")})
    proc = start_server(env, port, log=work / "server.log", new_session=True)
    url = f"http://127.0.0.1:{port}"
    body = {"points": [{"lon": 116.40, "lat": 39.90}], "species": ["pm25", "o3"], "lead_hours": 72}
    try:
        ready = wait_ready(url, proc, 120)
        asyncio.run(_load(url, body, 5, 2))  # warm-up
        return {"ready_s": ready, "levels": [asyncio.run(_load(url, body, r, duration)) for r in rates]}
    finally:
        stop_server(proc)


def run_all(quick: bool, threads: int, big: int, tile: int, rates: list[float], duration: float,
            skip: set[str], model_cfg: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every benchmark part; returns a JSON-able dict."""
    from models.artifact import ModelCard
    from training.export import random_inputs

    res: dict[str, Any] = {"quick": quick}
    with tempfile.TemporaryDirectory(prefix="aqcast-bench-") as tmp:
        work = Path(tmp)
        model, store, art = synthetic_setup(work, cfg=model_cfg)
        card = ModelCard.read(art)
        res["model"] = {"config": dict(model_cfg or {}), "params": int(sum(p.numel() for p in model.parameters())),
                        "onnx_mb": (art / "model.onnx").stat().st_size / 1e6, "parity": card.parity.model_dump()}
        for b in (1, 4):
            x = random_inputs(card.channels, card.history, card.leads, 24, 24, b, 1, card.norm_stats)
            flops = model_flops(art / "model.onnx", x)
            if "engines" not in skip:
                r = bench_engines(model, art / "model.onnx", x, threads, 5 if quick else 20)
                r["gflop_per_forward"] = flops / 1e9
                r["ort_gflops"] = flops / r["ort"]["median_s"] / 1e9
                res[f"engines_24x24_batch{b}"] = r
                typer.echo(f"engines batch {b}: {json.dumps(r, default=float)}", err=True)
        if "grid" not in skip:
            from serving.forecaster import Forecaster

            fc = Forecaster(art, store, threads=threads)
            inputs = fc.assemble(fc.latest_init)
            res["beijing_grid_24x24"] = {"assemble": _timeit(lambda: fc.assemble(fc.latest_init), 3),
                                         "predict_72h": _timeit(lambda: fc.predict(inputs), 5 if quick else 20)}
            typer.echo(f"grid: {json.dumps(res['beijing_grid_24x24'], default=float)}", err=True)
        if "big" not in skip:
            res["big_grid"] = bench_big(art, big, tile, threads)
            typer.echo(f"big: {json.dumps(res['big_grid'], default=float)}", err=True)
        if "load" not in skip:
            res["load"] = bench_load(art, store, work, rates, duration)
    return res


def bench(
    quick: bool = typer.Option(False, "--quick", help="Short runs (a few seconds each)."),
    threads: int = typer.Option(0, help="Threads for ORT and torch (0 = all cores)."),
    big: int = typer.Option(1000, help="Side of the synthetic big grid (cells)."),
    tile: int = typer.Option(128, help="Tile side for the big grid (cells, halo added)."),
    rps: str = typer.Option("10,100", help="Request rates for the /forecast load test."),
    duration: float = typer.Option(60.0, help="Seconds per load level (--quick: 5)."),
    out: Path = typer.Option(None, help="Write the results as JSON here."),
    skip: str = typer.Option("", help="Comma list of parts to skip: engines,grid,big,load."),
    config: Path = typer.Option(None, "--config", help="Benchmark the architecture of this training config's "
                                "`model:` section (default: ModelConfig defaults)."),
) -> None:
    """Benchmark ORT vs eager, full-grid forecast times (Beijing-sized and big grids), /forecast latency."""
    threads = threads or os.cpu_count() or 1
    res = run_all(quick=quick, threads=threads, big=big if not quick else min(big, 400), tile=tile,
                  rates=[float(r) for r in rps.split(",") if r], duration=5.0 if quick else duration,
                  skip={s.strip() for s in skip.split(",") if s.strip()},
                  model_cfg=_model_section(config) if config else None)
    res["machine"] = {"cpus": os.cpu_count(), "threads": threads, "python": sys.version.split()[0],
                      "platform": platform.platform(), "gflops_matmul": matmul_rate(threads)}
    text = json.dumps(res, indent=1, default=float)
    typer.echo(text)
    if out:
        Path(out).write_text(text)


def _model_section(path: Path) -> dict[str, Any]:
    """The validated `model:` section of a training config, without history/leads (the bench sets its own)."""
    from training.config import load_config

    m = dict(load_config(path).model)
    return {k: v for k, v in m.items() if k not in ("history", "leads")}
