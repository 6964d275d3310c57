"""The embedded backend's CPU threads: by default it leaves a core to the gateway's own work."""

import pytest

from service.backends.local import LocalBackend

from .conftest import MODEL_NAME, run


async def _threads(backend: LocalBackend) -> int:
    await backend.start()
    try:
        return backend.threads
    finally:
        await backend.stop()


@pytest.mark.parametrize(("cpus", "threads", "expected"), [
    ({0, 1}, 0, 1),  # two CPUs: one for torch, one for decoding and the event loop
    ({0, 1}, 2, 2),  # an explicit count wins
])
def test_cpu_inference_threads(model_repository, monkeypatch, cpus, threads, expected):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: cpus)
    assert run(_threads(LocalBackend(model_repository, MODEL_NAME, threads=threads))) == expected
