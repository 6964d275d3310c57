"""REST (FastAPI): HTTP in, core calls, the core's results out as JSON; errors as HTTP statuses.

POST /v1/predict (alias /predict) takes either a multipart form with an `image` file, or a raw
image body (Content-Type image/*) with options as query parameters (`service.rest.inputs`).
POST /v1/render takes the same plus `joint` (whose heatmaps to draw) and returns a PNG. `/` is
the demo page, a few static files from `service/static/` (served under `/static/`).

Predict and model routes are guarded by the gateway's access control (authentication and
rate limits); health and metrics stay open for orchestrators and scrapers. Every call is
observed by the gateway (`service.gateway.Observer`) under its URL path and HTTP status.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from poseapi.schemas import ErrorResponse, PredictResponse
from service.errors import RequestTimeout, ServiceError
from service.gateway import REPLACED_HEADER, REPLACED_NOTE
from service.gateway import request_id as call_id
from service.metrics import CONTENT_TYPE
from service.rest import encode
from service.rest.inputs import PredictInput, openapi_inputs, read_predict_request

if TYPE_CHECKING:
    from service.gateway import Gateway

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parents[1] / "static"  # the demo page: index.html, app.js, style.css
# Probe and scrape paths; deploy/k8s's probes and ServiceMonitor are checked against these.
LIVE_PATH = "/health/live"
READY_PATH = "/health/ready"
METRICS_PATH = "/metrics"
# Requests that are work for the model: in flight while they run (a scrape of /metrics is not).
API_PREFIXES = ("/v1/", "/predict")

_ERRORS = {status: {"model": ErrorResponse, "description": what} for status, what in {
    401: "missing or wrong bearer token", 408: "the body did not arrive in time",
    413: "body too large or too many pixels", 415: "not an accepted image type",
    422: "corrupt image or bad options", 429: "queue full or rate limited (Retry-After)",
    503: "model not ready", 504: "deadline passed"}.items()}


def error_response(exc: ServiceError, request_id: str) -> JSONResponse:
    headers = {"X-Request-ID": request_id}
    if exc.retry_after is not None:
        headers["Retry-After"] = exc.retry_after_header()
    if exc.http_status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, RequestTimeout):  # uvicorn then closes the slow client's connection
        headers["Connection"] = "close"
    return JSONResponse({"error": exc.to_dict()}, status_code=exc.http_status, headers=headers)


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def _admit(request: Request) -> None:
    _gateway(request).access.admit(request.headers.get("authorization"),
                                   _client(request) or "unknown")


async def _read(request: Request, extra: tuple[str, ...] = ()) -> PredictInput:
    _admit(request)
    settings = _gateway(request).settings
    return await read_predict_request(request, settings.max_body_bytes, settings.body_timeout_s,
                                      extra)


async def predict(request: Request) -> PredictResponse:
    gateway, given = _gateway(request), await _read(request)
    result = await gateway.service.predict(given.data, given.content_type, given.options)
    gateway.observer.result(result)
    return encode.predict_response(result)


async def render(request: Request) -> Response:
    given = await _read(request, ("joint",))
    png = await _gateway(request).service.render(given.data, given.content_type, given.options,
                                                 given.extra.get("joint", "left_wrist"))
    return Response(png, media_type="image/png")


async def model(request: Request) -> dict:
    _admit(request)
    return encode.model_description(_gateway(request).service.model_description())


async def live() -> dict:
    return {"status": "live"}


async def ready(request: Request) -> Response:
    ok = await _gateway(request).service.ready()
    return JSONResponse({"status": "ready" if ok else "not ready"},
                        status_code=200 if ok else 503)


async def prometheus(request: Request) -> Response:
    return Response(_gateway(request).metrics.exposition(), media_type=CONTENT_TYPE)


async def demo() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html")


def _routes() -> APIRouter:
    v1 = APIRouter()
    v1.add_api_route("/v1/predict", predict, methods=["POST"], response_model=PredictResponse,
                     summary="Estimate 3D poses in an image", responses=_ERRORS,
                     openapi_extra=openapi_inputs({}))
    v1.add_api_route("/v1/render", render, methods=["POST"], response_class=Response,
                     summary="Draw the poses: 2D overlay, 3D view, heatmaps of one joint",
                     responses={200: {"content": {"image/png": {}}}, **_ERRORS},
                     openapi_extra=openapi_inputs({"joint": {"type": "string"}}))
    v1.add_api_route("/predict", predict, methods=["POST"], response_model=PredictResponse,
                     include_in_schema=False)
    v1.add_api_route("/v1/model", model, methods=["GET"],
                     summary="The served model: skeleton, input size, name, version")
    v1.add_api_route(LIVE_PATH, live, methods=["GET"])
    v1.add_api_route(READY_PATH, ready, methods=["GET"])
    v1.add_api_route(METRICS_PATH, prometheus, methods=["GET"], include_in_schema=False)
    v1.add_api_route("/", demo, methods=["GET"], include_in_schema=False)
    return v1


def create_app(gateway: Gateway) -> FastAPI:
    """The FastAPI app over a gateway; its lifespan runs the gateway's core, for when the app
    is served on its own (`Gateway.serve` runs the core once for both servers instead)."""
    app = FastAPI(title="MargiPose Serve", version="1.0.0",
                  lifespan=lambda app: gateway.core(),
                  description="3D human pose estimation with marginal heatmaps. API v1.")
    app.state.gateway = gateway

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc, request.state.request_id)

    @app.middleware("http")
    async def observe(request: Request, call_next):
        request_id, replaced = call_id(request.headers.get("x-request-id"))
        request.state.request_id = request_id
        route = request.url.path
        api = route.startswith(API_PREFIXES)
        with gateway.observer.call(route, "rest", request.method, request_id, _client(request),
                                   in_flight=api, counted=api or route.startswith("/health")
                                   ) as call:
            try:
                response = await call_next(request)
            except Exception:
                log.exception("unhandled error on %s (request %s)", route, request_id)
                response = error_response(ServiceError("Internal error"), request_id)
            call.status = response.status_code
            response.headers["X-Request-ID"] = request_id
            if replaced:
                response.headers[REPLACED_HEADER] = REPLACED_NOTE
        return response

    app.include_router(_routes())
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
