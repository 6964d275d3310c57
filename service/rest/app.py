"""REST adapter (FastAPI): converts HTTP to core calls and ServiceErrors to HTTP statuses.

POST /v1/predict (alias /predict) takes either a multipart form with an `image` file, or a raw
image body (Content-Type image/*) with options as query parameters. Options (form fields or
query parameters): `boxes` (JSON list of [x, y, w, h]), `fx`, `fy`, `cx`, `cy` (all four or
none), `root_depth_mm`, `heatmaps` (none|f16|png), `timeout_s`. POST /v1/render takes the same
plus `joint` (whose heatmaps to draw) and returns a PNG. `/` is the demo page, a few static
files from `service/static/` (served under `/static/`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from service import logs
from service.access import Access, Authenticator, RateLimiter, retry_after_header
from service.core import PoseService
from service.errors import (
    InvalidRequest,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
    UnsupportedMediaType,
)
from service.imaging import ACCEPTED_TYPES, SNIFFED_TYPES
from service.metrics import CONTENT_TYPE, Metrics
from service.rest import encode
from service.schemas import ErrorResponse, PredictOptions, PredictResponse, parse_options

log = logging.getLogger(__name__)
access_log = logging.getLogger("margipose.access")

STATIC_DIR = Path(__file__).parents[1] / "static"  # the demo page: index.html, app.js, style.css
OPTION_FIELDS = ("boxes", "fx", "fy", "cx", "cy", "root_depth_mm", "heatmaps", "timeout_s")

# OpenAPI of the predict-like routes, which read the request themselves: the inputs and errors.
_OPTION_SCHEMAS = {
    "boxes": {"type": "string", "description": "JSON list of person boxes [x, y, w, h], pixels"},
    **{k: {"type": "number", "description": "camera intrinsics in pixels: all four or none"}
       for k in ("fx", "fy", "cx", "cy")},
    "root_depth_mm": {"type": "number", "minimum": 100, "maximum": 100000},
    "heatmaps": {"type": "string", "enum": ["none", "f16", "png"]},
    "timeout_s": {"type": "number", "exclusiveMinimum": 0},
}
_BINARY = {"type": "string", "format": "binary"}


def _openapi_inputs(extra: dict[str, dict]) -> dict:
    """Request body (a raw image, or multipart with `image`) and options; `extra`: more fields."""
    options = {**_OPTION_SCHEMAS, **extra}
    return {
        # In the query with a raw image body; as form fields (only) with multipart.
        "parameters": [{"name": k, "in": "query", "required": False, "schema": v,
                        "description": "with a raw image body; multipart sends it as a field"}
                       for k, v in options.items()],
        "requestBody": {"required": True, "content": {
            **{t: {"schema": _BINARY} for t in (*ACCEPTED_TYPES, *SNIFFED_TYPES)},
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["image"], "additionalProperties": False,
                "properties": {"image": _BINARY, **options},
            }},
        }},
    }


_ERRORS = {status: {"model": ErrorResponse, "description": what} for status, what in {
    401: "missing or wrong bearer token", 408: "the body did not arrive in time",
    413: "body too large or too many pixels", 415: "not an accepted image type",
    422: "corrupt image or bad options", 429: "queue full or rate limited (Retry-After)",
    503: "model not ready", 504: "deadline passed"}.items()}


def options_from_fields(fields: Mapping[str, str]) -> PredictOptions:
    """Build PredictOptions from string fields (form or query); 422 on anything unknown."""
    unknown = sorted(set(fields) - set(OPTION_FIELDS))
    if unknown:
        raise InvalidRequest(f"Unknown options {unknown}; allowed: {', '.join(OPTION_FIELDS)}")
    raw: dict = {}
    if "boxes" in fields:
        try:
            boxes = json.loads(fields["boxes"])
        # ValueError: also a number over Python's 4300-digit limit; RecursionError: too deep.
        except (ValueError, RecursionError):
            raise InvalidRequest("boxes must be JSON: a list of [x, y, w, h]") from None
        if not isinstance(boxes, list) or not all(
            isinstance(b, list) and len(b) == 4 for b in boxes
        ):
            raise InvalidRequest(f"boxes must be a list of [x, y, w, h], got {fields['boxes']!r}")
        raw["boxes"] = [dict(zip("xywh", b, strict=True)) for b in boxes]
    k = [name for name in ("fx", "fy", "cx", "cy") if name in fields]
    if k and len(k) != 4:
        raise InvalidRequest(f"Give all of fx, fy, cx, cy or none of them; got only {k}")
    if k:
        raw["intrinsics"] = {name: fields[name] for name in k}
    for name in ("root_depth_mm", "heatmaps", "timeout_s"):
        if name in fields:
            raw[name] = fields[name]
    return parse_options(raw)


def _single(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Fields as a dict; 422 for a field given twice (which of its values would be meant?)."""
    fields: dict[str, str] = {}
    for name, value in items:
        if name in fields:
            raise InvalidRequest(f"Option {name!r} is given more than once; give it once")
        fields[name] = value
    return fields


async def _read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """Read the body, refusing (413) as soon as it passes `limit` bytes, 408 after `timeout_s`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"Request body of {int(declared)} bytes exceeds the {limit}-byte limit"
        )
    chunks, size = [], 0
    try:
        # uvicorn bounds neither a slow body nor one shorter than its Content-Length.
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"Request body exceeds the {limit}-byte limit")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(
            f"The request body did not arrive within {timeout_s:g} s ({size} bytes received, "
            f"Content-Length {declared or 'not given'}); send the whole body within {timeout_s:g} s"
        ) from None
    except ClientDisconnect:  # a client's doing, not a server error: no 500, no traceback
        raise InvalidRequest(
            f"The client closed the connection after {size} bytes of the request body"
        ) from None
    return b"".join(chunks)


def _error_response(exc: ServiceError, request_id: str) -> JSONResponse:
    headers = {"X-Request-ID": request_id}
    if exc.retry_after is not None:
        headers["Retry-After"] = retry_after_header(exc.retry_after)
    if exc.http_status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, RequestTimeout):  # uvicorn then closes the slow client's connection
        headers["Connection"] = "close"
    return JSONResponse({"error": exc.to_dict()}, status_code=exc.http_status, headers=headers)


def create_app(service: PoseService, metrics: Metrics, access: Access | None = None
               ) -> FastAPI:
    """Assemble the FastAPI app around a PoseService (started and stopped with the app).

    `access` (authentication and rate limits) guards the predict and model routes; health
    and metrics stay open for orchestrators and scrapers.
    """
    access = access or Access(Authenticator([]), RateLimiter(0, 1))

    def admit(request: Request) -> None:
        peer = request.client.host if request.client else "unknown"
        access.admit(request.headers.get("authorization"), peer)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.start()
        info = service.backend.info()
        metrics.model.info({"name": info.name, "version": info.version,
                            "backend": service.backend.kind})
        metrics.track_queue(lambda: service.batcher.queue_depth)
        yield
        await service.stop()

    app = FastAPI(title="MargiPose Serve", version="1.0.0", lifespan=lifespan,
                  description="3D human pose estimation with marginal heatmaps. API v1.")

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return _error_response(exc, request.state.request_id)

    @app.middleware("http")
    async def observe(request: Request, call_next):
        request.state.request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        token = logs.request_id.set(request.state.request_id)
        route = request.url.path
        start = time.perf_counter()
        # API requests only: a scrape of /metrics must not count itself as work in flight.
        api = route.startswith(("/v1/", "/predict"))
        if api:
            metrics.in_flight.inc()
        try:
            response = await call_next(request)
        except Exception:
            log.exception("unhandled error on %s (request %s)", route, request.state.request_id)
            response = _error_response(ServiceError("Internal error"), request.state.request_id)
        finally:
            if api:
                metrics.in_flight.dec()
        if api or route.startswith("/health"):
            metrics.requests.labels(route, "rest", str(response.status_code)).inc()
            metrics.latency.labels(route, "rest").observe(time.perf_counter() - start)
        response.headers["X-Request-ID"] = request.state.request_id
        access_log.info("%s %s %d", request.method, route, response.status_code, extra={
            "method": request.method, "path": route, "status": response.status_code,
            "duration_ms": round((time.perf_counter() - start) * 1000, 3),
            "client": request.client.host if request.client else None,
        })
        logs.request_id.reset(token)
        return response

    v1 = APIRouter()

    async def read_request(request: Request, extra: tuple[str, ...] = ()
                           ) -> tuple[bytes, str | None, PredictOptions, dict[str, str]]:
        """Body and options of a predict-like request; `extra` names route-specific fields."""
        admit(request)
        limit, timeout_s = service.settings.max_body_bytes, service.settings.body_timeout_s
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            if request.query_params:  # they would be ignored
                raise InvalidRequest(
                    "With multipart/form-data give options as form fields, not in the query; "
                    f"got query parameters {sorted(request.query_params)}"
                )
            # form() re-reads the cached body
            request._body = await _read_body(request, limit, timeout_s)
            try:
                async with request.form() as form:  # closes the spooled upload files
                    uploads = form.getlist("image")
                    files = [u for u in uploads if not isinstance(u, str)]
                    if len(uploads) != 1 or not files:
                        raise InvalidRequest(
                            "Multipart requests need one `image` file field; got "
                            f"{len(uploads)} `image` fields, {len(files)} of them files"
                        )
                    upload = files[0]
                    # A file under any other name is an unknown option too.
                    fields = _single((k, v if isinstance(v, str) else "")
                                     for k, v in form.multi_items() if k != "image")
                    data, image_type = await upload.read(), upload.content_type
            except HTTPException as exc:  # starlette's 400 for a body it cannot parse
                raise InvalidRequest(
                    f"Malformed multipart/form-data body: {exc.detail} Send one `image` file "
                    "field and options as text fields (each at most 1 MiB)"
                ) from None
        elif content_type.startswith("application/x-www-form-urlencoded"):
            raise UnsupportedMediaType(
                "Send the image as multipart/form-data (field `image`) or as a raw image body"
            )
        else:
            fields = _single(request.query_params.multi_items())
            data, image_type = await _read_body(request, limit, timeout_s), content_type or None
        specific = {k: fields.pop(k) for k in extra if k in fields}
        return data, image_type, options_from_fields(fields), specific

    async def predict(request: Request) -> PredictResponse:
        data, image_type, options, _ = await read_request(request)
        result = await service.predict(data, image_type, options)
        metrics.persons.observe(len(result.persons))
        metrics.observe_timings(result.timings_ms)
        return encode.predict_response(result)

    v1.add_api_route("/v1/predict", predict, methods=["POST"], response_model=PredictResponse,
                     summary="Estimate 3D poses in an image", responses=_ERRORS,
                     openapi_extra=_openapi_inputs({}))
    async def render(request: Request) -> Response:
        data, image_type, options, specific = await read_request(request, ("joint",))
        png = await service.render(data, image_type, options, specific.get("joint", "left_wrist"))
        return Response(png, media_type="image/png")

    v1.add_api_route("/v1/render", render, methods=["POST"], response_class=Response,
                     summary="Draw the poses: 2D overlay, 3D view, heatmaps of one joint",
                     responses={200: {"content": {"image/png": {}}}, **_ERRORS},
                     openapi_extra=_openapi_inputs({"joint": {"type": "string"}}))
    v1.add_api_route("/predict", predict, methods=["POST"], response_model=PredictResponse,
                     include_in_schema=False)

    @v1.get("/v1/model", summary="The served model: skeleton, input size, name, version")
    async def model(request: Request) -> dict:
        admit(request)
        return encode.model_description(service.model_description())

    @v1.get("/health/live")
    async def live() -> dict:
        return {"status": "live"}

    @v1.get("/health/ready")
    async def ready() -> Response:
        ok = await service.ready()
        return JSONResponse({"status": "ready" if ok else "not ready"},
                            status_code=200 if ok else 503)

    @v1.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    app.include_router(v1)

    @app.get("/", include_in_schema=False)
    async def demo() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
