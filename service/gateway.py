"""The gateway: one core, two transports, and the one place that starts, stops and observes them.

`Gateway` builds the core (`PoseService` over the backend the settings name), the metrics, the
access control and both servers. REST (`service.rest`) and gRPC (`service.grpc`) are peers:
each turns its wire format into core calls and the core's results back, and reports every call
to the gateway's `Observer` with a status of its own kind (HTTP status, gRPC code name).

Order of life: the core starts (model loaded and warmed up, metrics told which model), then
gRPC, then REST; on `stop`, both servers stop accepting and give calls in flight
`shutdown_grace_s`, and only then does the core stop (draining its batcher).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import uvicorn

from service import logs
from service.access import Access, Authenticator, RateLimiter, load_tokens
from service.backends import make_backend
from service.backends.base import Backend
from service.core import PoseService
from service.detector import PersonDetector, make_detector
from service.metrics import Metrics
from service.results import PoseResult
from service.settings import Settings

log = logging.getLogger(__name__)
access_log = logging.getLogger("margipose.access")


# Request ids travel back in HTTP headers and gRPC metadata, and into logs and traces: both
# want printable ASCII, and metadata wants it short. An id that breaks the rule is replaced.
REQUEST_ID_MAX_CHARS = 128
REQUEST_ID_RULE = (f"1 to {REQUEST_ID_MAX_CHARS} printable ASCII characters (space to ~), "
                   "not starting or ending with a space")
REPLACED_HEADER = "x-request-id-replaced"  # REST header and gRPC trailing metadata
REPLACED_NOTE = f"the request id given was not {REQUEST_ID_RULE}; x-request-id replaces it"


def new_request_id() -> str:
    return uuid.uuid4().hex


def valid_request_id(given: str) -> bool:
    return (0 < len(given) <= REQUEST_ID_MAX_CHARS and given.isascii() and given.isprintable()
            and given == given.strip(" "))


def request_id(given: str | None) -> tuple[str, bool]:
    """The id a call goes by, and whether the caller's was replaced: the caller's own when it
    follows REQUEST_ID_RULE, a new one when none was given or it breaks the rule (the call goes
    on; its answer, or its real error, carries the new id and says the old one was replaced)."""
    if not given:
        return new_request_id(), False
    if valid_request_id(given):
        return given, False
    log.warning("request id replaced: not %s (%d characters given)", REQUEST_ID_RULE, len(given))
    return new_request_id(), True


def build_access(settings: Settings) -> Access:
    """Authentication and rate limits from settings (both off by default)."""
    return Access(
        Authenticator(load_tokens(settings.auth_tokens, settings.auth_token_file)),
        RateLimiter(settings.rate_limit_rps, settings.rate_limit_burst),
    )


@dataclass
class Call:
    """One call being observed; the transport sets `status` before the call ends."""

    route: str
    transport: str  # "rest" or "grpc": the metrics' transport label
    method: str     # the HTTP method, or "GRPC"
    request_id: str
    client: str | None
    status: int | str = ""


class Observer:
    """Per-call observation for both transports: the request id in the logs, requests in
    flight, counts and latency by route, transport and status, and the access log line."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    @contextlib.contextmanager
    def call(self, route: str, transport: str, method: str, request_id: str,
             client: str | None, *, in_flight: bool = True, counted: bool = True
             ) -> Iterator[Call]:
        """Observe one call (or one stream frame). `in_flight`: it is work (a scrape of
        /metrics is not); `counted`: it goes into the request counter and latency."""
        call = Call(route, transport, method, request_id, client)
        token = logs.request_id.set(request_id)
        start = time.perf_counter()
        if in_flight:
            self.metrics.in_flight.inc()
        try:
            yield call
        finally:
            elapsed = time.perf_counter() - start
            if in_flight:
                self.metrics.in_flight.dec()
            if counted:
                self.metrics.requests.labels(route, transport, str(call.status)).inc()
                self.metrics.latency.labels(route, transport).observe(elapsed)
            access_log.info("%s %s %s", method, route, call.status, extra={
                "method": method, "path": route, "status": call.status,
                "duration_ms": round(elapsed * 1000, 3), "client": client,
            })
            logs.request_id.reset(token)

    def result(self, result: PoseResult) -> None:
        """What a successful predict found: persons, and each stage's time."""
        self.metrics.persons.observe(len(result.persons))
        self.metrics.observe_timings(result.timings_ms)


class _Uvicorn(uvicorn.Server):
    """uvicorn without signal handlers of its own: the gateway stops both servers together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Gateway:
    """The core, its metrics and access control, and the REST and gRPC servers around it."""

    def __init__(self, settings: Settings, backend: Backend | None = None,
                 detector: PersonDetector | None | bool = True):
        """`backend` None: the one the settings name; `detector` True: the one the settings
        name (`service.detector.make_detector`), else that detector or None (none)."""
        # Imported here: the transports import the gateway's Observer and Call.
        from service.grpc import GrpcServer
        from service.rest import create_app

        self.settings = settings
        self.metrics = Metrics()
        self.observer = Observer(self.metrics)
        # One Access for both servers: a client's rate limit counts REST and gRPC alike.
        self.access = build_access(settings)
        if detector is True:
            detector = make_detector(settings)
        self.service = PoseService(settings, backend or make_backend(settings),
                                   observer=self.metrics.observe_batch,
                                   detector=detector or None)
        self.app = create_app(self)
        self.grpc = GrpcServer(self) if settings.grpc_port else None
        self.rest = _Uvicorn(uvicorn.Config(
            self.app, host=settings.host, port=settings.port, log_level=settings.log_level,
            lifespan="off",  # the gateway runs the core itself, once for both servers
            timeout_graceful_shutdown=settings.shutdown_grace_s,
            timeout_keep_alive=settings.keep_alive_s,
            log_config=None,  # keep our JSON logging (service.logs), not uvicorn's own
        ))
        self.started = False  # both servers accept requests
        self._stop = asyncio.Event()

    @contextlib.asynccontextmanager
    async def core(self) -> AsyncIterator[None]:
        """The core running: started (and described to the metrics) on entry, stopped on exit.
        Also the REST app's lifespan, for when the app runs without `serve`."""
        await self.service.start()
        info = self.service.backend.info()
        described = {"name": info.name, "version": info.version,
                     "backend": self.service.backend.kind}
        if self.service.detector is not None:
            d = self.service.detector.info()
            described.update(detector=d.name, detector_version=d.version)
        self.metrics.model.info(described)
        self.metrics.track_queue(lambda: self.service.batcher.queue_depth)
        try:
            yield
        finally:
            await self.service.stop()

    def stop(self) -> None:
        """Begin a graceful shutdown (call from the gateway's event loop)."""
        self._stop.set()

    async def serve(self) -> None:
        """Start the core, then both servers; after `stop`, drain both, then stop the core."""
        async with self.core():
            if self.grpc is not None:
                await self.grpc.start()
            rest = asyncio.create_task(self.rest.serve())
            stopping = asyncio.create_task(self._stop.wait())
            try:
                while not self.rest.started and not rest.done():
                    await asyncio.sleep(0.01)
                self.started = self.rest.started
                await asyncio.wait((rest, stopping), return_when=asyncio.FIRST_COMPLETED)
            finally:
                self.started = False
                self.rest.should_exit = True  # REST drains in its task while gRPC drains here
                if self.grpc is not None:
                    await self.grpc.stop(self.settings.shutdown_grace_s)
                stopping.cancel()
                await rest
