"""A real `bentoml serve` on a free loopback port: /readyz, /forecast, stopped by PID."""
from __future__ import annotations

import socket

import pytest
from test_export import tiny_artifact

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bentoml_serve_forecast(tmp_path_factory, tiny_store, tiny_store_path):
    import httpx

    from serving.cli import server_env, start_server, stop_server, wait_ready

    art = tiny_artifact(tmp_path_factory, tiny_store, tiny_store_path)
    home = tmp_path_factory.mktemp("e2e_home")
    env = server_env(model_dir=art, store=tiny_store_path, extra={"AQCAST_HOME": str(home),
                                                                  "BENTOML_HOME": str(home / "bentoml"),
                                                                  "AQCAST_ORT_THREADS": "1"})
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(env, port, log=home / "server.log", new_session=True)
    try:
        wait_ready(url, proc, timeout=90)
        assert httpx.get(url + "/readyz", timeout=5).status_code == 200
        r = httpx.post(url + "/forecast", json={"points": [{"lon": 116.40, "lat": 39.90}],
                                                "species": ["pm25", "o3"], "lead_hours": 72}, timeout=30)
        assert r.status_code == 200, r.text
        item = r.json()["forecasts"][0]
        assert len(item["species"]["pm25"]["p50"]) == 72 and len(item["species"]["o3"]["aqi"]) == 72
        bad = httpx.post(url + "/forecast", json={"points": [{"lon": 0.0, "lat": 0.0}]}, timeout=30)
        assert bad.status_code == 400 and "outside the grid" in bad.text
        assert httpx.get(url + "/model", timeout=5).json()["ready"] is True
    finally:
        stop_server(proc)
    assert proc.poll() is not None
