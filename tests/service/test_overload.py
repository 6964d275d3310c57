"""Overload and deadlines through the real REST server: 429 with Retry-After, 504, recovery."""

import concurrent.futures
import json

import httpx
import pytest

from service.settings import Settings

from .conftest import MODEL_NAME, RunningServer, free_port, jpeg_bytes

BOXES = json.dumps([[10, 10, 100, 100], [50, 20, 80, 120], [120, 40, 90, 90],
                    [200, 30, 60, 150]])


@pytest.fixture(scope="module")
def small_queue(model_repository):
    # One crop per batch and room for four queued crops: two concurrent 4-person requests
    # cannot both wait.
    settings = Settings(model_repository=model_repository, model_name=MODEL_NAME,
                        port=free_port(), grpc_port=0, max_batch_size=1, max_queue=4,
                        max_batch_wait_ms=0)
    with RunningServer(settings) as running:
        yield running


def _post(url: str, **params) -> httpx.Response:
    return httpx.post(f"{url}/v1/predict", content=jpeg_bytes(), timeout=60,
                      headers={"Content-Type": "image/jpeg"}, params=params)


def test_full_queue_answers_429_and_recovers(small_queue):
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: _post(small_queue.url, boxes=BOXES), range(8)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 429}, statuses
    assert 429 in statuses and 200 in statuses, statuses
    for r in responses:
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "overloaded"
            assert int(r.headers["retry-after"]) >= 1
    # Nothing is left behind: the queue drains and the next request is served.
    assert small_queue.service.batcher.queue_depth == 0
    assert _post(small_queue.url, boxes=BOXES).status_code == 200


def test_more_crops_than_the_queue_can_hold_is_a_client_error(small_queue):
    boxes = json.dumps([[10, 10, 50, 50]] * 5)
    r = _post(small_queue.url, boxes=boxes)
    assert r.status_code == 422, r.text


def test_deadline_passed_gives_504(small_queue):
    r = _post(small_queue.url, timeout_s="0.000001")
    assert r.status_code == 504, r.text
    assert r.json()["error"]["code"] == "deadline_exceeded"
    assert _post(small_queue.url).status_code == 200
