"""New data off the model's grid: stations left out and said so, points up to 150 km out forecast on the grid
grown by whole cells (same cell ids, the same inputs on the model's cells), points on the grid unchanged by them."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from features.errors import DataError, OutOfDomainError
from features.grid import Grid
from features.regrid import station_density_proxy

torch.set_num_threads(1)
SMALL = {"history": 6, "leads": 5, "hidden": 8, "decoder_hidden": 8, "dilations": [1, 2],
         "spread_sigmas": [1.0, 3.0], "spread_recent": 2, "spread_stride": 2, "history_forcing_stride": 2}
FAR_EAST = (116.75, 40.00)  # about 30 km east of the tiny raw stations' grid


def test_grown_grid_keeps_cell_ids_and_covers_the_points() -> None:
    g = Grid.from_extent([116.30, 116.45], [39.92, 40.10], margin_km=6)
    assert g.covering([116.35], [40.0]) is g  # inside: no growth
    assert g.km_outside([116.35], [40.0])[0] == 0
    lon, lat = FAR_EAST
    km = g.km_outside([lon], [lat])[0]
    x_edge = g.x[-1] + g.res_m / 2
    assert km == pytest.approx((g.project(lon, lat)[0] - x_edge) / 1000, rel=1e-6) and 15 < km < 40
    grown = g.covering([lon], [lat], margin_km=6)
    assert grown.contains([lon], [lat]).all() and not g.contains([lon], [lat]).any()
    assert grown.km_outside([lon + 0.07], [lat])[0] == 0  # the margin (~6 km) beyond the point
    r0, c0 = grown.cell_id_to_rowcol(g.cell_id(0, 0))
    np.testing.assert_array_equal(grown.cell_ids()[r0:r0 + g.ny, c0:c0 + g.nx], g.cell_ids())
    assert (r0, c0, grown.ny) == (0, 0, g.ny) and grown.nx > g.nx  # grown eastwards only, by whole cells


def test_emission_proxy_keeps_its_scale_on_a_grown_grid() -> None:
    g = Grid.from_extent([116.30, 116.45], [39.92, 40.10], margin_km=6)
    grown = g.covering([FAR_EAST[0]], [FAR_EAST[1]], margin_km=6)
    lon, lat = np.array([116.30, 116.45]), np.array([39.92, 40.10])
    base = station_density_proxy(g, lon, lat)
    r0, c0 = grown.cell_id_to_rowcol(g.cell_id(0, 0))
    pinned = station_density_proxy(grown, lon, lat, mean_over=g)[r0:r0 + g.ny, c0:c0 + g.nx]
    np.testing.assert_allclose(pinned, base, rtol=1e-5)
    free = station_density_proxy(grown, lon, lat)[r0:r0 + g.ny, c0:c0 + g.nx]
    assert np.abs(free / base - 1).min() > 0.05  # without the pin every cell moves


@pytest.fixture(scope="module")
def trained_like(tmp_path_factory):
    """A raw directory, a store on its grid and an untrained model with that store's channels and metadata."""
    from conftest import TINY_RAW_STATIONS, write_uci_dir

    from features.store import build_store
    from features.windows import WindowSampler
    from models import build_model
    from models.config import ModelConfig

    root = tmp_path_factory.mktemp("domain")
    side = root / "emissions"
    side.mkdir()
    totals = side / "meic_china_sector_totals_2010_2017.csv"
    pd.DataFrame([{"species": sp, "year": 2021, "sector": sec, "emission_tg": 1.0 + k}
                  for sp in ("NOx", "SO2", "NMVOC", "NH3", "PM2.5")
                  for k, sec in enumerate(("Power", "Industry", "Residential", "Transportation"))]
                 ).to_csv(totals, index=False)
    ref = build_store(write_uci_dir(root / "train" / "data", n_days=8), None, emission_totals=totals,
                      progress=False)
    s = WindowSampler(ref, [ref["time"].values[50]], history=6, leads=5)
    ch = {"obs": s.obs_vars, "forcing": s.forcing_vars, "static": s.static_vars}
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SMALL), ch, json.loads(ref.attrs["norm_stats"])).eval()
    meta = {"grid": ref.attrs["grid"], "channels": ch, "history": 6, "leads": 5,
            "store_options": {"emission_totals": str(totals), "margin_km": 6.0,
                              "emission_proxy_points": [ref["station_lon"].values.tolist(),
                                                        ref["station_lat"].values.tolist()]}}
    outside = write_uci_dir(root / "later" / "data", n_days=8, seed=3,
                            stations=dict(TINY_RAW_STATIONS) | {"Faraway": FAR_EAST})
    return model, meta, ref, outside, root


def test_station_off_the_grid_is_left_out_and_said(trained_like, monkeypatch) -> None:
    from training.domain import build_store_for

    _model, meta, ref, outside, root = trained_like
    monkeypatch.setenv("AQCAST_SHARED_DATA", str(root / "no-shared"))
    said: list[str] = []
    ds = build_store_for(outside, meta, echo=said.append)
    assert sorted(ds["station"].values) == sorted(ref["station"].values)  # Faraway is not an input
    assert "Faraway" in json.loads(ds.attrs["dropped_stations"])
    assert len(said) == 1 and "Faraway" in said[0] and "left out of the inputs" in said[0]
    from features.store import build_store

    with pytest.raises(OutOfDomainError, match="Faraway"):  # a store build on a given grid still refuses it
        build_store(outside, None, grid=Grid.from_json(ref.attrs["grid"]), progress=False)


def test_grown_grid_gives_the_model_cells_the_same_inputs(trained_like, monkeypatch) -> None:
    from training.domain import build_store_for, grid_for_points

    _model, meta, _ref, outside, root = trained_like
    monkeypatch.setenv("AQCAST_SHARED_DATA", str(root / "no-shared"))
    grown, note = grid_for_points(meta, ["east"], np.array([FAR_EAST[0]]), np.array([FAR_EAST[1]]))
    assert "east" in note and "extrapolate" in note
    g = Grid.from_json(meta["grid"])
    r0, c0 = grown.cell_id_to_rowcol(g.cell_id(0, 0))
    on_model = build_store_for(outside, meta)
    on_grown = build_store_for(outside, meta, grown)
    assert "Faraway" in on_grown["station"].values  # an input where the grid reaches it
    for v in ("emis_nox", "emis_pm25", "static_elevation"):
        if v in on_model:
            np.testing.assert_allclose(on_grown[v].values[..., r0:r0 + g.ny, c0:c0 + g.nx], on_model[v].values,
                                       rtol=1e-5, err_msg=v)
    assert "emis_nox" in on_model


def test_backtest_points_off_the_grid(trained_like, tmp_path, monkeypatch) -> None:
    from training.backtest import run_backtest

    model, meta, _ref, outside, root = trained_like
    monkeypatch.setenv("AQCAST_SHARED_DATA", str(root / "no-shared"))
    on = "point_id,lon,lat\nAlpha,116.30,39.92\nmiddle,116.38,40.00\n"
    (tmp_path / "on.csv").write_text(on)
    (tmp_path / "both.csv").write_text(on + f"east,{FAR_EAST[0]},{FAR_EAST[1]}\n")
    said: list[str] = []

    def run(points: str, out: str) -> pd.DataFrame:
        return run_backtest(model, meta, outside, "2021-01-04T00:00+08:00", "2021-01-05T00:00+08:00", "24h",
                            tmp_path / points, tmp_path / out, echo=said.append)

    alone, both = run("on.csv", "a.csv"), run("both.csv", "b.csv")
    assert list(both["point_id"].unique()) == ["Alpha", "middle", "east"]  # the file's order
    assert len(both) == 2 * 5 * 3 * 2
    q = both.loc[both["point_id"] == "east", ["p10", "p50", "p90"]].to_numpy()
    assert np.isfinite(q).all() and (q >= 0).all() and (np.diff(q, axis=1) >= 0).all()
    kept = both[both["point_id"] != "east"].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, alone)  # a point off the grid changes nothing on it
    assert any("east" in m and "grown" in m for m in said)
    both_band = run_backtest(model, meta, outside, "2021-01-06T00:00+08:00", "2021-01-06T00:00+08:00", "24h",
                             tmp_path / "both.csv", tmp_path / "r.csv", echo=said.append, rolling_bands=2)
    assert len(both_band) == 5 * 3 * 2
    rolled = [m for m in said if m.startswith("rolled band")]
    assert [m.rsplit("(", 1)[-1] for m in rolled] == ["points on the model grid)", "points off it)"]
    (tmp_path / "far.csv").write_text(on + "shanghai,121.47,31.23\n")
    with pytest.raises(DataError, match="shanghai.*km outside"):
        run("far.csv", "c.csv")
    (tmp_path / "swapped.csv").write_text(on + "swapped,40.0,116.38\n")
    with pytest.raises(DataError, match="not a place.*swapped") as e:
        run("swapped.csv", "c.csv")
    assert "row 4" in str(e.value)
    assert not (tmp_path / "c.csv").exists()
