"""`aqcast features build|info` through typer's CliRunner."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from features.cli import app
from features.grid import Grid
from features.store import open_store

runner = CliRunner()


def test_build_and_info(tiny_raw_dir, tmp_path) -> None:
    out = tmp_path / "s.zarr"
    r = runner.invoke(app, ["build", "--data", str(tiny_raw_dir), "--out", str(out), "--res-km", "3",
                            "--train-to", "2021-01-20T00:00+08:00", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "wrote" in r.output and "missing" in r.output and "target" in r.output
    assert "weather clock: on time" in r.output
    ds = open_store(out)
    assert json.loads(ds.attrs["train_period"])[1] == "2021-01-19T16:00:00+00:00"
    r = runner.invoke(app, ["info", str(out)])
    assert r.exit_code == 0, r.output
    for word in ("stn_pm25", "target", "coverage", "STUCK", "LONG_GAP", "Alpha", "provenance", "sat_aod",
                 "training period", "weather clock"):
        assert word in r.output, word


def test_build_with_given_grid(tiny_raw_dir, tmp_path) -> None:
    g = Grid.from_extent([116.28, 116.47], [39.9, 40.12], res_km=0.5, margin_km=1)
    (tmp_path / "g.json").write_text(g.to_json())
    out = tmp_path / "g.zarr"
    r = runner.invoke(app, ["build", "--data", str(tiny_raw_dir), "--out", str(out),
                            "--grid", str(tmp_path / "g.json"), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert Grid.from_json(open_store(out).attrs["grid"]) == g


def test_errors_exit_2(tmp_path, tiny_raw_dir) -> None:
    r = runner.invoke(app, ["build", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.zarr")])
    assert r.exit_code == 2 and "data directory not found" in r.output
    r = runner.invoke(app, ["info", str(tmp_path / "nowhere.zarr")])
    assert r.exit_code == 2 and "no feature store" in r.output
    tiny = Grid(lon_0=100, lat_0=30, res_m=3000, x0=0.0, y0=0.0, nx=2, ny=2)  # far from the stations
    (tmp_path / "far.json").write_text(tiny.to_json())
    r = runner.invoke(app, ["build", "--data", str(tiny_raw_dir), "--out", str(tmp_path / "y.zarr"),
                            "--grid", str(tmp_path / "far.json"), "--no-progress"])
    assert r.exit_code == 2 and "outside the grid" in r.output
    r = runner.invoke(app, ["build", "--data", str(tiny_raw_dir), "--out", str(tmp_path / "z.zarr"),
                            "--weather-clock", "sometimes", "--no-progress"])
    assert r.exit_code == 2 and "weather_clock must be 'auto' or 'off'" in r.output
    assert not (tmp_path / "z.zarr").exists()
