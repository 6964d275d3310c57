"""Fixtures for service tests: a small exported model and a real gateway (REST and gRPC)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

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


# A gateway process in which `import torch` fails: the slim image's situation.
NO_TORCH_GATEWAY = """
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
from service.__main__ import main
main(sys.argv[1:])
"""


@contextlib.contextmanager
def torch_free_gateway(args: list[str], log_path: Path) -> Iterator[httpx.Client]:
    """`serve ARGS` in a process where torch cannot be imported; a REST client once ready.

    On exit the gateway gets SIGTERM and must shut down cleanly (exit status 0).
    """
    port = free_port()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", NO_TORCH_GATEWAY, *args,
             "--port", str(port), "--grpc-port", str(free_port())],
            stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[2])
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                deadline = time.monotonic() + 60
                while True:
                    assert proc.poll() is None, log_path.read_text()
                    with contextlib.suppress(httpx.TransportError):
                        if client.get("/health/ready").status_code == 200:
                            break
                    assert time.monotonic() < deadline, "the torch-free gateway never got ready"
                    time.sleep(0.2)
                yield client
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, log_path.read_text()
