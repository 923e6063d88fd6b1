"""The forecast service in-process (ASGI): every endpoint, every bad request, observations advancing init."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from test_export import tiny_artifact

pytest.importorskip("bentoml")
EXACT = {"points": [{"lon": 116.40, "lat": 39.90}], "species": ["pm25", "o3"], "lead_hours": 72}
LAST = "2021-01-20T23:00:00+00:00"  # last hour of the tiny store


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_store, tiny_store_path):
    from starlette.testclient import TestClient

    art = tiny_artifact(tmp_path_factory, tiny_store, tiny_store_path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AQCAST_HOME", str(tmp_path_factory.mktemp("home")))
        mp.setenv("AQCAST_MODEL_DIR", str(art))
        mp.setenv("AQCAST_STORE", str(tiny_store_path))
        mp.setenv("AQCAST_MAX_CELLS", "100")
        mp.setenv("AQCAST_ORT_THREADS", "1")
        from serving.service import AQCastService

        with TestClient(AQCastService.to_asgi()) as c:
            yield c


def test_exact_request(client):
    r = client.post("/forecast", json=EXACT)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["init_time"] == LAST and body["model_version"].startswith("local:")
    band = body["band"]  # rolled at station cells by default, as the backtest does (tests/test_service_bands.py)
    assert band["rolled_window_days"] == 30 and set(band["factor"]) == {"pm25", "o3"}
    assert band["earlier_forecasts"] == 19 and band["verified_samples"]["o3"] > 1000  # the store's days before it
    (item,) = body["forecasts"]
    assert item["query"] == {"lon": 116.40, "lat": 39.90} and item["cell_id"].startswith("3000m_")
    assert item["lead_hours"] == list(range(1, 73)) and item["valid_time"][0] == "2021-01-21T00:00:00+00:00"
    for sp in ("pm25", "o3"):
        s = item["species"][sp]
        p10, p50, p90 = (np.array(s[k]) for k in ("p10", "p50", "p90"))
        assert p10.shape == (72,) and (p10 <= p50 + 1e-6).all() and (p50 <= p90 + 1e-6).all() and (p10 >= 0).all()
        assert len(s["aqi"]) == 72 and s["category"][0] in ("Excellent", "Good", "Lightly polluted",
                                                           "Moderately polluted", "Heavily polluted",
                                                           "Severely polluted")
    from features.aqi import iaqi

    assert item["species"]["pm25"]["aqi"][0] == pytest.approx(float(iaqi(p50_first(item), "pm25")), abs=1)


def p50_first(item):
    return item["species"]["pm25"]["p50"][0]


def test_cells_bbox_leads_quantiles_init(client):
    grid = client.get("/grid").json()
    r = client.post("/forecast", json={"cells": [grid["cell_id_first"]], "species": ["o3"], "lead_hours": [1, 24],
                                       "quantiles": [0.5], "init_time": "2021-01-20T08:00:00+08:00"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["init_time"] == "2021-01-20T00:00:00+00:00" and body["quantiles"] == [0.5]
    item = body["forecasts"][0]
    assert item["row"] == 0 and item["col"] == 0 and item["lead_hours"] == [1, 24]
    assert set(item["species"]) == {"o3"} and set(item["species"]["o3"]) == {"p50", "aqi", "category"}
    lon, lat = item["lon"], item["lat"]
    r = client.post("/forecast", json={"bbox": [lon - 0.01, lat - 0.01, lon + 0.05, lat + 0.05], "lead_hours": 3})
    assert r.status_code == 200 and 1 <= len(r.json()["forecasts"]) <= 9


def test_netcdf(client):
    import xarray as xr

    grid = client.get("/grid").json()
    r = client.post("/forecast", json={"bbox": grid["bbox"], "lead_hours": [24], "format": "netcdf"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-netcdf")
    ds = xr.open_dataset(io.BytesIO(r.content), engine="h5netcdf")
    assert ds["pm25"].dims == ("lead_time", "quantile", "y", "x") and ds["pm25"].shape == (1, 3, 16, 16)
    assert ds.attrs["Conventions"] == "CF-1.8" and ds["o3"].attrs["units"] == "ug m-3"
    assert json.loads(ds.attrs["band"])["rolled_window_days"] == 30
    assert ds["lon"].shape == (16, 16) and float(ds["pm25"].sel(quantile=0.5).min()) >= 0
    assert "pm25_iaqi" in ds and str(ds["time"].values[0]).startswith("2021-01-21T23")
    r = client.post("/forecast", json=EXACT | {"format": "netcdf"})
    ds = xr.open_dataset(io.BytesIO(r.content), engine="h5netcdf")
    assert ds["pm25"].dims == ("lead_time", "quantile", "cell") and ds.sizes["lead_time"] == 72


def test_info_endpoints(client):
    g = client.get("/grid").json()
    assert g["ny"] == 16 and g["nx"] == 16 and len(g["bbox"]) == 4 and g["crs"].startswith("+proj=laea")
    m = client.get("/model")
    assert m.status_code == 200
    m = m.json()
    assert m["ready"] and m["latest_init_time"] and m["validation_metrics"]["mae_pm25"] == 12.5
    assert m["train_window"] and m["parity"]["max_abs_diff_random"] < 1e-2 and m["model_version"]
    assert m["ensemble_members"] == 1 and m["architecture"]["encoder"] == "dilated" and m["rolling_bands_days"] == 30
    assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200
    spec = client.get("/docs.json").json()
    assert "/forecast" in spec["paths"] and "/observations" in spec["paths"]


BAD = [
    ({"points": [{"lon": 116.4, "lat": 39.9}], "species": ["no2"]}, 400, "pm25"),
    ({"points": [{"lon": 116.4, "lat": 39.9}], "lead_hours": 73}, 400, "less than or equal to 72"),
    ({"points": [{"lon": 116.4, "lat": 39.9}], "lead_hours": [0, 5]}, 400, "greater than or equal to 1"),
    ({"points": [{"lon": 100.0, "lat": 30.0}]}, 400, "outside the grid"),
    ({"points": [{"lon": 116.4, "lat": 95.0}]}, 400, "less than or equal to 90"),
    ({"species": ["pm25"]}, 400, "exactly one of"),
    ({"points": [{"lon": 116.4, "lat": 39.9}], "cells": ["3000m_1_1"]}, 400, "exactly one of"),
    ({"cells": ["nonsense"]}, 400, "malformed cell id"),
    ({"cells": ["3000m_9999_9999"]}, 400, "outside"),
    ({"bbox": [110, 30, 170, 60]}, 413, "shrink"),
    ({"bbox": [100, 30, 101, 31]}, 400, "no cell centre"),
    ({"bbox": [117, 30, 116, 31]}, 400, "west < east"),
    ({"points": [{"lon": 116.4, "lat": 39.9}], "init_time": "2021-01-20T08:00:00"}, 400, "no UTC offset"),
    ({"points": [{"lon": 116.4, "lat": 39.9}], "init_time": "2030-01-01T00:00:00Z"}, 400, "not available"),
    ({"points": [{"lon": 116.4, "lat": 39.9}], "init_time": "yesterday"}, 400, "ISO 8601"),
    ({"points": [{"lon": 116.4, "lat": 39.9}], "quantiles": [0.25]}, 400, "choose from"),
    ({"points": [{"lon": 116.4, "lat": 39.9}], "format": "csv"}, 400, "netcdf"),
    ({"points": [{"lon": 116.4, "lat": 39.9}], "speceis": ["pm25"]}, 400, "speceis"),
]


@pytest.mark.parametrize("body,status,msg", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_requests(client, body, status, msg):
    r = client.post("/forecast", json=body)
    assert r.status_code == status, r.text
    assert msg in r.text


def test_malformed_json_then_still_serving(client):
    r = client.post("/forecast", content=b'{"points": [', headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.text
    assert client.post("/forecast", json=EXACT).status_code == 200


def test_observations_advance_init(client):
    before = client.get("/model").json()["latest_init_time"]
    assert before == LAST
    rows = [{"station": s, "time": "2021-01-21T08:00:00+08:00", "pm25": 180.0, "o3": 20.0}
            for s in ("Alpha", "Bravo", "Charlie", "Delta")]
    r = client.post("/observations", json={"rows": rows})
    assert r.status_code == 200, r.text
    assert r.json()["latest_init_time"] == "2021-01-21T00:00:00+00:00"
    body = client.post("/forecast", json=EXACT).json()
    assert body["init_time"] == "2021-01-21T00:00:00+00:00"
    assert body["forecasts"][0]["valid_time"][0] == "2021-01-21T01:00:00+00:00"
    old = client.post("/forecast", json=EXACT | {"init_time": LAST}).json()
    assert old["init_time"] == LAST
    bad = client.post("/observations", json={"rows": [{"station": "Zulu", "time": "2021-01-21T09:00:00Z",
                                                       "pm25": 1.0}]})
    assert bad.status_code == 400 and "unknown" in bad.text and "Alpha" in bad.text
    bad = client.post("/observations", json={"rows": [{"station": "Alpha", "time": "2021-01-21T09:00:00Z"}]})
    assert bad.status_code == 400 and "no pollutant value" in bad.text
    bad = client.post("/observations", json={"rows": [{"station": "Alpha", "time": "2021-01-21T09:00:00Z",
                                                       "pm25": -3}]})
    assert bad.status_code == 400


def test_not_ready_explains(tmp_path, tiny_store_path, monkeypatch):
    """A failing start must not raise (BentoML would hang): not ready, and the reason is reported."""
    monkeypatch.setenv("AQCAST_MODEL_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("AQCAST_STORE", str(tiny_store_path))
    from serving.service import AQCastService

    svc = AQCastService.inner()
    assert svc.__is_ready__() is False and "model.onnx" in svc.error
    info = svc.model_info()
    assert info["ready"] is False and "model.onnx" in info["error"]


def test_model_reports_the_alias_it_was_started_from(client, monkeypatch):
    """`aqcast serve --model models:/aqcast@champion` pins the alias to a version before starting the server and
    passes the request along: /model names both the alias and the pinned version."""
    monkeypatch.delenv("AQCAST_MODEL_DIR", raising=False)
    monkeypatch.setenv("AQCAST_REQUESTED_URI", "models:/aqcast@champion")
    m = client.get("/model").json()
    assert m["requested_uri"] == "models:/aqcast@champion" and m["alias"] == "champion"
    assert m["model_version"]
    monkeypatch.setenv("AQCAST_REQUESTED_URI", "models:/aqcast/3")
    assert client.get("/model").json()["alias"] is None


def test_weather_past_the_store_end_is_persisted_and_reported(client):
    """The latest init has no weather forecast in the store: the service persists the last day's forcing
    instead of feeding the model a fully masked horizon (which it never saw in training), and says so."""
    latest = client.get("/model").json()["latest_init_time"]
    body = {"points": [{"lon": 116.40, "lat": 39.95}], "species": ["o3"], "lead_hours": 72}
    r = client.post("/forecast", json=body).json()
    assert r["init_time"] == latest and r["weather_persisted_hours"] >= 72  # the whole horizon (+ init if posted)
    assert 0 <= min(r["forecasts"][0]["species"]["o3"]["p50"]) and max(r["forecasts"][0]["species"]["o3"]["p50"]) < 500


def test_persist_forcing_fills_only_the_trailing_gap():
    import numpy as np
    import xarray as xr

    from serving.forecaster import persist_forcing

    t = np.arange(60)
    a = (10 + np.sin(2 * np.pi * t / 24)).astype(np.float32)[:, None] * np.ones((1, 3), np.float32)
    a[40:] = np.nan  # store ends at hour 39
    a[10] = np.nan  # a gap inside the record
    ds = xr.Dataset({"met_t2m": (("time", "x"), a.copy(), {"role": "forcing"}),
                     "obs_o3": (("time", "x"), a.copy(), {"role": "observed"})}, coords={"time": t})
    assert persist_forcing(ds) == 20
    f = ds["met_t2m"].values
    np.testing.assert_array_equal(f[40:], f[16:36])
    assert np.isnan(f[10]).all() and np.isnan(ds["obs_o3"].values[40:]).all()
