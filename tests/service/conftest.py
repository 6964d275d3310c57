"""Fixtures for service tests: a small exported model and a real gateway (REST and gRPC)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from deploy.badinput import good_jpeg as jpeg_bytes  # noqa: F401  (the corpus's good picture)
from service.gateway import Gateway
from service.settings import Settings
from tests.conftest import MODEL_NAME


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningServer:
    """The gateway (REST and gRPC in one event loop) on a background thread, on loopback."""

    def __init__(self, settings: Settings):
        if "grpc_port" not in settings.model_fields_set:  # never the fixed default in tests
            settings = settings.model_copy(update={"grpc_port": free_port()})
        self.settings = settings
        self.gateway = Gateway(settings)
        self.app, self.service, self.metrics = self.gateway.app, self.gateway.service, \
            self.gateway.metrics
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.url = f"http://127.0.0.1:{settings.port}"
        self.grpc_target = f"127.0.0.1:{settings.grpc_port}"

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(self.gateway.serve())
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def __enter__(self) -> RunningServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.gateway.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.gateway.stop)
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the gateway did not stop"


@pytest.fixture(scope="module")
def server(model_repository) -> Iterator[RunningServer]:
    settings = Settings(model_repository=model_repository, model_name=MODEL_NAME,
                        port=free_port(), grpc_port=free_port(), max_body_bytes=2_000_000,
                        max_image_pixels=4_000_000, max_persons=4, max_batch_size=8)
    with RunningServer(settings) as running:
        yield running


@pytest.fixture
def client(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def run(coro):
    """Run a coroutine to completion (no pytest-asyncio here)."""
    return asyncio.run(coro)
