"""Copy a feature store with `station_distance_km` counting only the input stations (a diagnostic, not a forecast).

    python docs/scorecard/input_station_distance.py /tmp/bj/store.zarr /tmp/bj/store-di.zarr Dongsi Dingling

The store's field is the km from each cell centre to the nearest station of the data directory, held-out stations
included. Scoring a model on the copy (`aqcast evaluate ... --store COPY`) shows how much its forecasts at the
held-out stations lean on that field (docs/experiments-beijing-13.md). Every other variable is copied unchanged.
"""
from __future__ import annotations

import shutil
import sys

import numpy as np
import xarray as xr
import zarr

from features.grid import Grid
from features.regrid import distance_to_nearest_km


def main(src: str, dst: str, held_out: list[str]) -> None:
    shutil.copytree(src, dst)
    ds = xr.open_zarr(dst)
    names = [str(s) for s in ds["station"].values]
    unknown = sorted(set(held_out) - set(names))
    if unknown:
        raise SystemExit(f"not stations of {src}: {unknown}")
    before = ds["station_distance_km"].values
    keep = np.array([n not in held_out for n in names])
    d = distance_to_nearest_km(Grid.from_json(ds.attrs["grid"]), ds["station_lon"].values[keep],
                               ds["station_lat"].values[keep])
    zarr.open(dst, mode="r+")["station_distance_km"][:] = d
    rows, cols = ds["station_row"].values, ds["station_col"].values
    for n, r, c in zip(names, rows, cols):
        print(f"{n:16s} {float(before[r, c]):6.1f} -> {float(d[r, c]):6.1f} km")


if __name__ == "__main__":
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
