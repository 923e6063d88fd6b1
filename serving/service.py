"""BentoML 1.4 forecast service on onnxruntime: `bentoml serve serving.service:AQCastService`.

Configuration (environment, read at start):
  AQCAST_MODEL_DIR   local artifact dir (model.onnx + model_card.json); bypasses MLflow (tests, air-gapped)
  AQCAST_MODEL_URI   registry URI, default models:/aqcast@champion; the alias is pinned to a version at start
  AQCAST_TRACKING_URI / MLFLOW_TRACKING_URI   MLflow store (default sqlite:///$AQCAST_HOME/mlflow.db)
  AQCAST_STORE       feature store (zarr) on the model's grid (default: the store named in the model card)
  AQCAST_HOME        state dir (default ./.aqcast): downloaded artifacts go to $AQCAST_HOME/serving
  AQCAST_ORT_THREADS onnxruntime intra-op threads (0 = all cores); AQCAST_CACHE_SIZE init times kept (4)
  AQCAST_MAX_CELLS   cells per JSON response (5000); AQCAST_MAX_NETCDF_CELLS per NetCDF response (4e6)
  AQCAST_ACCESS_LOG  1 = BentoML access log per request (off by default: it costs latency)
A failing start does not raise (BentoML would hang): /readyz stays 503 and every endpoint says why.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import anyio
import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from features.errors import DataError
from serving.forecaster import Forecaster, RequestError, iso, parse_time
from serving.schemas import ForecastRequest, ObservationsRequest

log = logging.getLogger("aqcast.serving")
NETCDF = "application/x-netcdf"


def _error(message: str, status: int = 400, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _service() -> AQCastService:
    return bentoml.get_current_service()  # type: ignore[return-value]


async def _grid(request: Request) -> Response:
    svc = _service()
    if svc.forecaster is None:
        return _error(f"not ready: {svc.error}", 503)
    return JSONResponse(svc.forecaster.grid_info())


async def _model(request: Request) -> Response:
    return JSONResponse(_service().model_info(), status_code=200 if _service().forecaster else 503)


routes = Starlette(routes=[Route("/grid", _grid, methods=["GET"]), Route("/model", _model, methods=["GET"])])


@bentoml.service(name="aqcast", workers=1, traffic={"timeout": 300, "max_concurrency": 256},
                 resources={"cpu": "2"},
                 logging={"access": {"enabled": os.environ.get("AQCAST_ACCESS_LOG", "0") == "1"}})
@bentoml.asgi_app(routes, path="/")
class AQCastService:
    """PM2.5/O3 quantile forecasts for every grid cell, 1-72 h ahead, from one pinned ONNX model version."""

    def __init__(self) -> None:
        self.forecaster: Forecaster | None = None
        self.error: str | None = "starting"
        self.resolved: Any = None
        self.started = time.time()
        try:
            self._load()
            self.error = None
        except Exception as ex:  # noqa: BLE001 - a raising __init__ hangs the BentoML supervisor
            self.error = str(ex) if isinstance(ex, DataError) else f"{type(ex).__name__}: {ex}"
            log.error("aqcast service failed to start: %s", self.error)

    def _load(self) -> None:
        from serving.registry import resolve

        env = os.environ
        self.resolved = resolve(uri=env.get("AQCAST_MODEL_URI"), model_dir=env.get("AQCAST_MODEL_DIR"),
                                tracking_uri=env.get("AQCAST_TRACKING_URI") or None)
        from models.artifact import ModelCard

        card = ModelCard.read(self.resolved.artifact_dir)
        store = env.get("AQCAST_STORE") or card.store
        if not store:
            raise DataError("no feature store: set AQCAST_STORE (or `aqcast serve --store PATH`)")
        self.forecaster = Forecaster(self.resolved.artifact_dir, Path(store), label=self.resolved.label,
                                     cache_size=int(env.get("AQCAST_CACHE_SIZE", 4)),
                                     rolling_bands=float(env.get("AQCAST_ROLLING_BANDS", 30)))
        self.max_cells = int(env.get("AQCAST_MAX_CELLS", 5000))
        self.max_nc_cells = int(float(env.get("AQCAST_MAX_NETCDF_CELLS", 4e6)))
        init, _ = self.forecaster.forecast()  # warm the cache for the latest init time
        log.info("aqcast serving %s (%s), latest init %s", self.resolved.label, self.resolved.uri, iso(init))

    def __is_ready__(self) -> bool:
        return self.forecaster is not None

    def model_info(self) -> dict[str, Any]:
        """GET /model body: pinned version, data windows, validation scores, parity, times."""
        r = self.resolved
        requested = (os.environ.get("AQCAST_MODEL_DIR") or os.environ.get("AQCAST_REQUESTED_URI")
                     or os.environ.get("AQCAST_MODEL_URI") or "models:/aqcast@champion")
        info: dict[str, Any] = {"ready": self.forecaster is not None, "error": self.error,
                                "requested_uri": requested}
        if r is not None:
            from serving.registry import alias_of

            alias = r.alias or alias_of(requested)  # `aqcast serve` pins the alias before starting us
            info |= {"model_version": r.label, "name": r.name, "version": r.version, "pinned_uri": r.uri,
                     "alias": alias, "run_id": r.run_id, "artifact_dir": str(r.artifact_dir)}
        fc = self.forecaster
        if fc is not None:
            c = fc.card
            info |= {"train_window": c.train_window, "validation_window": c.validation_window,
                     "validation_metrics": c.validation_metrics, "parity": c.parity.model_dump() if c.parity else None,
                     "history_hours": c.history, "lead_hours": [1, c.leads], "species": c.species,
                     "quantiles": c.quantiles, "ensemble_members": c.ensemble_members,
                     "architecture": c.architecture, "channels": c.channels,
                     "code_version": c.code_version, "rolling_bands_days": fc.bands.window_days if fc.bands else 0,
                     "created": c.created, "store": fc.store_path, "latest_init_time": iso(fc.latest_init),
                     "earliest_init_time": iso(fc.earliest_init), "cached_init_times": fc.cached_inits(),
                     "uptime_s": round(time.time() - self.started, 1)}
        return info

    @bentoml.api(route="/forecast", input_spec=ForecastRequest)
    async def forecast(self, **kwargs: Any) -> dict[str, Any]:
        """Forecast for `points`, `cells` or `bbox`: per cell and lead hour the quantiles (µg m-3), the China
        hourly IAQI and category of the P50; `format=netcdf` returns CF NetCDF."""
        if self.forecaster is None:
            return _error(f"not ready: {self.error}", 503)
        req = ForecastRequest.model_construct(**kwargs)
        try:
            small = len(req.points or req.cells or []) <= 50
            if small and req.init_time is None and req.format == "json" and self.forecaster.is_cached(None):
                return self._forecast(req)  # cache hit: a slice, cheaper in the event loop than a thread hop
            return await anyio.to_thread.run_sync(self._forecast, req)
        except RequestError as ex:
            return _error(str(ex), ex.status)
        except DataError as ex:
            return _error(str(ex), 400)

    def _forecast(self, req: ForecastRequest) -> Response:
        from serving.output import cell_series, to_netcdf

        fc = self.forecaster
        assert fc is not None
        leads = req.leads()
        if leads[-1] > fc.card.leads:
            raise RequestError(f"lead_hours up to {fc.card.leads} only (this model's horizon); got {leads[-1]}")
        q_idx = list(range(len(fc.card.quantiles)))
        if req.quantiles is not None:
            bad = [q for q in req.quantiles if not any(abs(q - m) < 1e-9 for m in fc.card.quantiles)]
            if bad or not req.quantiles:
                raise RequestError(f"quantiles {bad or '[]'} not available; choose from {fc.card.quantiles}")
            q_idx = sorted({min(range(len(fc.card.quantiles)), key=lambda i: abs(fc.card.quantiles[i] - q))
                            for q in req.quantiles})
        netcdf = req.format == "netcdf"
        limit = self.max_nc_cells if netcdf else self.max_cells
        queries = None
        if req.points is not None:
            rows, cols = fc.select_points([p.lon for p in req.points], [p.lat for p in req.points])
            queries = [{"lon": p.lon, "lat": p.lat} for p in req.points]
        elif req.cells is not None:
            rows, cols = fc.select_cells(req.cells)
        else:
            rows, cols = fc.select_bbox(req.bbox or [], limit)
        if len(rows) > limit:
            raise RequestError(f"{len(rows)} cells requested, the limit is {limit} for format={req.format}", 413)
        init = parse_time(req.init_time, "init_time") if req.init_time else None
        init, cube = fc.forecast(init)
        species = list(dict.fromkeys(req.species))
        if netcdf:
            body = to_netcdf(fc, cube, init, rows, cols, species, leads, q_idx, gridded=req.bbox is not None)
            return Response(body, media_type=NETCDF, headers={
                "Content-Disposition": f'attachment; filename="aqcast_{iso(init)[:13]}.nc"'})
        items = cell_series(fc, cube, init, rows, cols, species, leads, q_idx, queries)
        return JSONResponse({"model_version": fc.label, "init_time": iso(init), "units": "ug m-3",
                             "quantiles": [fc.card.quantiles[i] for i in q_idx],
                             "aqi": "China HJ 633-2012 hourly IAQI of the P50 (PM2.5 with its 24-h breakpoints)",
                             "weather_persisted_hours": fc.persisted_hours.get(init, 0),
                             "band": fc.band_info.get(init),
                             "forecasts": items})

    @bentoml.api(route="/observations", input_spec=ObservationsRequest)
    def observations(self, **kwargs: Any) -> dict[str, Any]:
        """Add station rows (µg m-3, ISO times with offset); the latest init time advances, no restart needed;
        the forecast for the new latest init is computed before this returns."""
        if self.forecaster is None:
            return _error(f"not ready: {self.error}", 503)
        req = ObservationsRequest.model_construct(**kwargs)
        try:
            summary = self.forecaster.add_observations([r.model_dump() for r in req.rows])
            init, _ = self.forecaster.forecast()
        except RequestError as ex:
            return _error(str(ex), ex.status)
        return JSONResponse(summary | {"forecast_ready_for": iso(init)})

