"""Slicing a cached forecast cube into the JSON response or a CF-1.8 NetCDF file."""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from features.aqi import category, category_name, iaqi
from serving.forecaster import HOUR, Forecaster, iso

CF_NAMES = {"pm25": "mass_concentration_of_pm2p5_ambient_aerosol_particles_in_air",
            "o3": "mass_concentration_of_ozone_in_air"}
CATEGORY_NAMES = np.array([""] + [category_name(k) for k in range(1, 7)], dtype=object)


def quantile_keys(quantiles: Sequence[float]) -> list[str]:
    """0.1 -> 'p10'."""
    return [f"p{round(q * 100):d}" for q in quantiles]


def _p50_index(fc: Forecaster) -> int:
    q = list(fc.card.quantiles)
    return min(range(len(q)), key=lambda i: abs(q[i] - 0.5))


def cell_series(fc: Forecaster, cube: np.ndarray, init: np.datetime64, rows: np.ndarray, cols: np.ndarray,
                species: Sequence[str], leads: Sequence[int], q_idx: Sequence[int],
                queries: Sequence[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Per cell: lead hours, valid times, quantiles, IAQI and category (from P50) for each species."""
    li = np.asarray(leads, int) - 1
    sp_idx = [fc.card.species.index(s) for s in species]
    block = cube[li][:, sp_idx][..., rows, cols]  # [nl, ns, nq, n]
    p50 = block[:, :, _p50_index(fc)]  # [nl, ns, n]
    aqi = {s: iaqi(p50[:, k], s) for k, s in enumerate(species)}
    cat = {s: CATEGORY_NAMES[category(aqi[s])] for s in species}
    qk = quantile_keys([fc.card.quantiles[i] for i in q_idx])
    valid = iso(init + np.asarray(leads) * HOUR)
    lon, lat = fc.lon2d[rows, cols], fc.lat2d[rows, cols]
    vals = np.round(block[:, :, list(q_idx)].astype(np.float64), 2)  # [nl, ns, nq', n]
    out = []
    for n in range(len(rows)):
        sp = {}
        for k, s in enumerate(species):
            d: dict[str, Any] = {key: vals[:, k, j, n].tolist() for j, key in enumerate(qk)}
            d["aqi"] = aqi[s][:, n].tolist()
            d["category"] = cat[s][:, n].tolist()
            sp[s] = d
        item = {"cell_id": str(fc.cell_ids[rows[n], cols[n]]), "row": int(rows[n]), "col": int(cols[n]),
                "lon": round(float(lon[n]), 5), "lat": round(float(lat[n]), 5), "lead_hours": list(leads),
                "valid_time": valid, "species": sp}
        if queries is not None:
            item["query"] = queries[n]
        out.append(item)
    return out


def to_netcdf(fc: Forecaster, cube: np.ndarray, init: np.datetime64, rows: np.ndarray, cols: np.ndarray,
              species: Sequence[str], leads: Sequence[int], q_idx: Sequence[int], gridded: bool) -> bytes:
    """CF NetCDF bytes: `gridded` -> dims (lead_time, quantile, y, x) over the rows/cols bounding box,
    else (lead_time, quantile, cell)."""
    import xarray as xr

    li = np.asarray(leads, int) - 1
    quants = [fc.card.quantiles[i] for i in q_idx]
    lead_td = np.asarray(leads, "int64")
    coords: dict[str, Any] = {
        "lead_time": ("lead_time", lead_td, {"long_name": "forecast period", "units": "hours",
                                             "standard_name": "forecast_period"}),
        "time": ("lead_time", init + lead_td * HOUR, {"standard_name": "time", "long_name": "valid time (UTC)"}),
        "forecast_reference_time": ((), init, {"standard_name": "forecast_reference_time"}),
        "quantile": ("quantile", np.asarray(quants, float), {"long_name": "quantile of the predictive distribution"}),
    }
    if gridded:
        rs, cs = slice(int(rows.min()), int(rows.max()) + 1), slice(int(cols.min()), int(cols.max()) + 1)
        dims = ("lead_time", "quantile", "y", "x")
        coords |= {"y": ("y", fc.grid.y[rs], {"standard_name": "projection_y_coordinate", "units": "m"}),
                   "x": ("x", fc.grid.x[cs], {"standard_name": "projection_x_coordinate", "units": "m"}),
                   "lon": (("y", "x"), fc.lon2d[rs, cs], {"standard_name": "longitude", "units": "degrees_east"}),
                   "lat": (("y", "x"), fc.lat2d[rs, cs], {"standard_name": "latitude", "units": "degrees_north"})}

        def pick(a: np.ndarray) -> np.ndarray:
            return a[..., rs, cs]
    else:
        dims = ("lead_time", "quantile", "cell")
        coords |= {"cell_id": ("cell", fc.cell_ids[rows, cols].astype(str)),
                   "lon": ("cell", fc.lon2d[rows, cols], {"standard_name": "longitude", "units": "degrees_east"}),
                   "lat": ("cell", fc.lat2d[rows, cols], {"standard_name": "latitude", "units": "degrees_north"})}

        def pick(a: np.ndarray) -> np.ndarray:
            return a[..., rows, cols]
    data: dict[str, Any] = {}
    p50 = _p50_index(fc)
    for s in species:
        k = fc.card.species.index(s)
        block = pick(cube[li, k])  # [nl, nq, ...]
        attrs = {"units": "ug m-3", "standard_name": CF_NAMES[s], "grid_mapping": "crs",
                 "coordinates": "time lon lat"}
        data[s] = (dims, block[:, list(q_idx)].astype(np.float32), attrs)
        a = iaqi(block[:, p50], s)
        data[f"{s}_iaqi"] = (tuple(d for d in dims if d != "quantile"), a.astype(np.float32),
                             {"long_name": f"China hourly IAQI of {s} P50 (HJ 633-2012)", "units": "1"})
    data["crs"] = ((), np.int32(0), {"grid_mapping_name": "lambert_azimuthal_equal_area",
                                     "longitude_of_projection_origin": fc.grid.lon_0,
                                     "latitude_of_projection_origin": fc.grid.lat_0,
                                     "false_easting": 0.0, "false_northing": 0.0, "crs_wkt": fc.grid.crs})
    ds = xr.Dataset(data, coords=coords, attrs={
        "Conventions": "CF-1.8", "title": "aqcast PM2.5/O3 quantile forecast", "institution": "aqcast",
        "model_version": fc.label, "init_time": iso(init), "grid": fc.grid.to_json(),
        "source": f"aqcast ONNX model {fc.label}", "band": json.dumps(fc.band_info.get(init)),
        "history": f"created by aqcast serving for init {iso(init)}"})
    for v in ("time", "forecast_reference_time"):
        ds[v].encoding = {"units": "hours since 1970-01-01 00:00:00", "calendar": "standard", "dtype": "int64"}
    raw = ds.to_netcdf(engine="h5netcdf")
    return bytes(raw)
