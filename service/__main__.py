"""`serve`: run the MargiPose gateway (REST and gRPC) on the embedded TorchScript backend.

    serve --model-repository model_repository --model-name margipose-lite --port 8080 \
          --grpc-port 50051

Every flag has an environment variable twin with the MARGIPOSE_ prefix (see Settings); flags
win over the environment. Both servers run in one process and one event loop around one
PoseService. SIGTERM or SIGINT: both stop accepting, requests in flight get
`shutdown_grace_s` to finish, then the service stops (draining its batcher).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import typing
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from service import allocator, logs
from service.access import Access, Authenticator, RateLimiter, load_tokens
from service.backends.base import Backend
from service.core import PoseService
from service.grpc import GrpcServer
from service.metrics import Metrics
from service.rest import create_app
from service.settings import Settings


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Serve MargiPose over REST and gRPC.")
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        many = "+" if typing.get_origin(field.annotation) is list else None
        p.add_argument(flag, default=None, nargs=many,
                       help=(field.description or "").strip() or None)
    return p


def build_access(settings: Settings) -> Access:
    """Authentication and rate limits from settings (both off by default)."""
    return Access(
        Authenticator(load_tokens(settings.auth_tokens, settings.auth_token_file)),
        RateLimiter(settings.rate_limit_rps, settings.rate_limit_burst),
    )


def make_backend(settings: Settings) -> Backend:
    """The backend the settings name."""
    if settings.backend == "triton":
        # Imported here: tritonclient comes with the `triton` extra.
        from service.backends.triton import TritonBackend

        version = "" if settings.model_version is None else str(settings.model_version)
        return TritonBackend(settings.triton_url, settings.model_name, version,
                             settings.triton_timeout_s,
                             start_timeout_s=settings.triton_start_timeout_s)
    # Imported here: torch comes with the `local` extra; a Triton gateway runs without it.
    from service.backends.local import LocalBackend

    return LocalBackend(settings.model_repository, settings.model_name, settings.model_version,
                        settings.device, settings.torch_threads,
                        warmup_batch_sizes=(1, settings.max_batch_size))


def build(settings: Settings, access: Access | None = None
          ) -> tuple[FastAPI, PoseService, Metrics]:
    """Assemble backend, metrics, core and app from settings."""
    backend = make_backend(settings)
    metrics = Metrics()
    service = PoseService(settings, backend, observer=metrics.observe_batch)
    access = access or build_access(settings)
    return create_app(service, metrics, access), service, metrics


class _Uvicorn(uvicorn.Server):
    """uvicorn without signal handlers of its own: the gateway stops both servers together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Gateway:
    """The REST and gRPC servers in one event loop, sharing one PoseService."""

    def __init__(self, settings: Settings):
        self.settings = settings
        # One Access for both servers: a client's rate limit counts REST and gRPC alike.
        access = build_access(settings)
        self.app, self.service, self.metrics = build(settings, access)
        # uvicorn runs without the app's lifespan: `serve` enters it once for both servers.
        self.rest = _Uvicorn(uvicorn.Config(
            self.app, host=settings.host, port=settings.port, log_level=settings.log_level,
            lifespan="off", timeout_graceful_shutdown=settings.shutdown_grace_s,
            timeout_keep_alive=settings.keep_alive_s,
            log_config=None,  # keep our JSON logging (service.logs), not uvicorn's own
        ))
        self.grpc = (GrpcServer(self.service, self.metrics, settings, access)
                     if settings.grpc_port else None)
        self.started = False  # both servers accept requests
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Begin a graceful shutdown (call from the gateway's event loop)."""
        self._stop.set()

    async def serve(self) -> None:
        """Start the service, then both servers; after `stop`, drain both, then stop it."""
        # The app's lifespan (rest.create_app) starts the PoseService and describes the model
        # to the metrics; on exit it stops the service.
        async with self.app.router.lifespan_context(self.app):
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


async def _serve_until_signalled(gateway: Gateway) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, gateway.stop)
    await gateway.serve()


def main(argv: list[str] | None = None) -> None:
    args = get_args_parser().parse_args(argv)
    settings = Settings(**{k: v for k, v in vars(args).items() if v is not None})
    # Before any worker thread exists (decode pool, torch, gRPC), or they keep their own arenas.
    allocator.limit_malloc_arenas(settings.malloc_arena_max)
    logs.configure(settings.log_level)
    asyncio.run(_serve_until_signalled(Gateway(settings)))


if __name__ == "__main__":
    main()
