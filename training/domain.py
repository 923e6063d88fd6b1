"""Where a model forecasts on new data: the grid it was trained on, and for points outside it that grid grown by
whole cells; the feature store of a data directory built on either.

The network is convolutional with a bounded receptive field and reads its inputs cell by cell in physical units
(normalisation inside), so its grid extends without retraining: same projection, resolution and cell ids, the
emission proxy kept at its training scale (mean 1 over the training grid). The grown grid serves only the points
outside the model's grid: cells near the old edges would see inputs beyond them that training never showed, so
points on the model's grid keep the model grid's forecast, whatever else is asked. Stations of the data off the
grid in use are left out of its inputs, and said so. Beyond `MAX_EXTENSION_KM` a point is taken for a mistake
(swapped lon/lat, another city) and refused with a clear error.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from features.errors import DataError, OutOfDomainError, Problem

MAX_EXTENSION_KM = 150.0


def grid_from_meta(meta: dict[str, Any]):
    """features.grid.Grid from the model metadata (`grid` JSON string or dict)."""
    from features.grid import Grid

    g = meta.get("grid")
    if g is None:
        raise DataError("model metadata has no 'grid'; cannot place the data on the model's grid")
    return Grid.from_json(g if isinstance(g, str) else json.dumps(g))


def grid_for_points(meta: dict[str, Any], ids: list[str], lon: np.ndarray, lat: np.ndarray) -> tuple[Any, str]:
    """(grid, note): the model's grid grown by whole cells to cover the points outside it, with the training
    store's margin around them; points inside it need no growth. A point beyond `MAX_EXTENSION_KM` is an error."""
    grid = grid_from_meta(meta)
    km = grid.km_outside(lon, lat)
    (lo0, lo1), (la0, la1) = grid.bounds_lonlat()
    where = f"the model's grid (lon {lo0:.2f}..{lo1:.2f}, lat {la0:.2f}..{la1:.2f}; {grid.ny} x {grid.nx} cells)"
    far = np.flatnonzero(~(km <= MAX_EXTENSION_KM))
    if far.size:
        raise OutOfDomainError([Problem(
            f"point {ids[k]!r} at lon {lon[k]:.4f}, lat {lat[k]:.4f} lies {km[k]:.0f} km outside {where}; the "
            f"model forecasts at most {MAX_EXTENSION_KM:.0f} km beyond the grid it was trained on: check the "
            "coordinates (lon, lat order), or train a model on data around it") for k in far])
    margin = float((meta.get("store_options") or {}).get("margin_km", 15.0))
    grown = grid.covering(lon, lat, margin_km=margin)
    named = ", ".join(ids[:6]) + (f" and {len(ids) - 6} more" if len(ids) > 6 else "")
    note = (f"point{'s' if len(ids) > 1 else ''} {named} lie{'' if len(ids) > 1 else 's'} outside {where}, up "
            f"to {km.max():.0f} km: forecast there on the grid grown to {grown.ny} x {grown.nx} cells "
            f"({margin:g} km margin), with the data's stations on it as inputs; the model never saw those cells, "
            "so its forecasts there extrapolate (points on the model's grid keep its own forecast)")
    return grown, note


def build_store_for(data_dir: str | Path, meta: dict[str, Any], grid: Any = None,
                    echo: Callable[[str], None] | None = None):
    """Feature store of `data_dir` in memory, on `grid` (default: the model's), stations off it left out (said
    to `echo`). The model normalises with its own buffers.

    `meta["store_options"]` (optional dict: elevation, emission_totals, ...) is passed to `build_store` so the
    inputs are derived as they were for training."""
    from features.paths import shared_data_dir
    from features.store import build_store
    from features.store_build import SIDE_FILES

    if not Path(data_dir).is_dir():
        raise DataError(f"data directory not found: {data_dir}")
    model_grid = grid_from_meta(meta)
    grid = model_grid if grid is None else grid
    opts = dict(meta.get("store_options") or {})
    opts.pop("grid", None)
    opts.pop("margin_km", None)
    for key, (sub, name) in SIDE_FILES.items():  # the data's own side files, else the model's, else shared/
        given = opts.get(key)
        fname = Path(given).name if given else name
        cands = [Path(data_dir).parent / sub / fname, Path(given) if given else None, shared_data_dir() / sub / fname]
        found = next((c for c in cands if c is not None and c.is_file()), None)
        opts[key] = str(found) if found else None
    proxy = opts.get("emission_proxy_points")
    if proxy is not None:
        opts["emission_proxy_points"] = (list(proxy[0]), list(proxy[1]))
    if grid != model_grid:
        opts["emission_proxy_grid"] = model_grid
    ds = build_store(data_dir, None, grid=grid, progress=False, outside_stations="drop", **opts)
    dropped = json.loads(ds.attrs.get("dropped_stations", "{}"))
    if dropped and echo:
        echo(f"{len(dropped)} station{'s' if len(dropped) > 1 else ''} of {data_dir} left out of the inputs: "
             + "; ".join(f"{k} {v}" for k, v in dropped.items()))
    return ds
