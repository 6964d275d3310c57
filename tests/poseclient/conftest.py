"""Fixtures for client tests: one real gateway (REST and gRPC) with the tiny exported model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.settings import Settings
from tests.conftest import MODEL_NAME
from tests.service.conftest import RunningServer, free_port


@pytest.fixture(scope="package")
def server(model_repository) -> Iterator[RunningServer]:
    settings = Settings(model_repository=model_repository, model_name=MODEL_NAME,
                        port=free_port(), grpc_port=free_port(), max_persons=4,
                        max_batch_size=8)
    with RunningServer(settings) as running:
        yield running


def dead_url() -> str:
    """A loopback URL where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"
