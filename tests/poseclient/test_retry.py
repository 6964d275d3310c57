"""Retries on 429/503 honouring Retry-After: the policy, a stub transport, a real rate limit."""

import email.utils
import json
import time

import httpx
import pytest

from poseclient import ApiError, AsyncRestClient, GrpcClient, RestClient, RetryPolicy
from poseclient.retry import Deadline, parse_retry_after
from service.grpc import PREDICT
from service.settings import Settings
from tests.service.conftest import RunningServer, free_port, jpeg_bytes, run

from .conftest import MODEL_NAME

MODEL_BODY = {"name": "m", "version": "1", "backend": "local", "input_size": 256,
              "joints": ["a"], "parents": [0], "card": {}}
NOBODY = {"model": {"name": "m", "version": "1", "backend": "local"},
          "image": {"width": 8, "height": 8}, "intrinsics_source": "default_fov",
          "intrinsics": {"fx": 7.0, "fy": 7.0, "cx": 4.0, "cy": 4.0}, "persons": [],
          "timings_ms": {"total": 1.0}}


def _error(status: int, retry_after: float | None = None, code: str = "overloaded"
           ) -> ApiError:
    return ApiError("here", "busy", code=code, status=status, retry_after=retry_after)


# ---- the policy -------------------------------------------------------------------------------

def test_policy_honours_retry_after_and_backs_off_without_it():
    policy = RetryPolicy(max_attempts=4, backoff_s=0.5, max_wait_s=30)
    assert policy.wait_s(1, _error(429, 2.0), remaining_s=60) == 2.0
    assert [policy.wait_s(a, _error(503), 60) for a in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert policy.wait_s(4, _error(503), 60) is None  # attempts spent


def test_policy_gives_up_on_what_waiting_cannot_fix():
    policy = RetryPolicy()
    assert policy.wait_s(1, _error(422, code="invalid_request"), 60) is None
    assert policy.wait_s(1, _error(413, code="payload_too_large"), 60) is None
    assert policy.wait_s(1, _error(429, 5.0), remaining_s=4.0) is None  # past the deadline
    assert policy.wait_s(1, _error(429, 31.0), remaining_s=100) is None  # over max_wait_s
    grpc_full = ApiError("t", "m", code="RESOURCE_EXHAUSTED", retry_after=1.0)
    grpc_too_big = ApiError("t", "m", code="RESOURCE_EXHAUSTED")
    assert policy.wait_s(1, grpc_full, 60) == 1.0 and policy.wait_s(1, grpc_too_big, 60) is None


def test_policy_and_deadline_refuse_nonsense():
    with pytest.raises(ValueError, match="max_attempts must be at least 1, got 0"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="timeout must be a positive number of seconds, got -1"):
        Deadline(-1)


def test_retry_after_header_forms():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0.5 ") == 0.5
    in_ten = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8 < parse_retry_after(in_ten) <= 10
    assert parse_retry_after(email.utils.formatdate(time.time() - 100, usegmt=True)) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


# ---- a stub transport (unit test of the client's loop) ---------------------------------------

class Script:
    """Answers in turn, recording when each request came."""

    def __init__(self, *answers: httpx.Response):
        self.answers, self.times, self.requests = list(answers), [], []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.times.append(time.monotonic())
        self.requests.append(request)
        return self.answers.pop(0)


def _busy(seconds: str = "1") -> httpx.Response:
    return httpx.Response(429, headers={"Retry-After": seconds}, json={
        "error": {"code": "overloaded", "message": "Queue full", "retry_after": 0.7}})


def test_429_with_retry_after_then_200():
    script = Script(_busy("1"), httpx.Response(200, json=MODEL_BODY))
    with RestClient("http://stub", transport=httpx.MockTransport(script)) as client:
        assert client.model().name == "m"
    assert len(script.times) == 2
    assert script.times[1] - script.times[0] >= 1.0  # the header's whole second, not 0.7


def test_waits_count_against_the_deadline():
    script = Script(_busy("2"), httpx.Response(200, json=MODEL_BODY))
    with RestClient("http://stub", timeout=1.5, transport=httpx.MockTransport(script)) as c:
        start = time.monotonic()
        with pytest.raises(ApiError) as caught:
            c.model()
    assert time.monotonic() - start < 0.5  # gave up at once: waiting would pass the deadline
    assert caught.value.status == 429 and caught.value.retry_after == 2.0
    assert len(script.times) == 1


def test_attempts_are_bounded_and_the_last_error_raised():
    script = Script(*[httpx.Response(503, json={"error": {"code": "backend_unavailable",
                                                          "message": "not ready"}})] * 3)
    policy = RetryPolicy(max_attempts=3, backoff_s=0.05)
    with RestClient("http://stub", retry=policy, transport=httpx.MockTransport(script)) as c:
        with pytest.raises(ApiError, match="503 backend_unavailable: not ready"):
            c.model()
    assert len(script.times) == 3
    gaps = [b - a for a, b in zip(script.times, script.times[1:], strict=False)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1


def test_every_attempt_sends_the_image_and_the_remaining_deadline():
    script = Script(_busy("1"), httpx.Response(503, headers={"Retry-After": "1"}, json={}),
                    httpx.Response(200, json=NOBODY))
    with RestClient("http://stub", timeout=20, transport=httpx.MockTransport(script)) as c:
        assert c.predict(b"jpeg bytes", boxes=[[1, 2, 3, 4]]).persons == []
    assert [r.content for r in script.requests] == [b"jpeg bytes"] * 3
    assert all(json.loads(r.url.params["boxes"]) == [[1, 2, 3, 4]] for r in script.requests)
    deadlines = [float(r.url.params["timeout_s"]) for r in script.requests]
    assert 19 < deadlines[0] <= 20 and deadlines[2] < deadlines[1] - 0.9 < deadlines[0] - 1.8


def test_async_client_retries_the_same_way():
    script = Script(_busy("1"), httpx.Response(200, json=MODEL_BODY))

    async def go():
        async with AsyncRestClient("http://stub", transport=httpx.MockTransport(script)) as c:
            return await c.model()

    assert run(go()).name == "m"
    assert len(script.times) == 2 and script.times[1] - script.times[0] >= 1.0


# ---- the real server, rate limited ----------------------------------------------------------

@pytest.fixture(scope="module")
def limited(model_repository):
    # One request per second per client with no burst beyond one: a second call at once is
    # answered 429 with Retry-After: 1. Each test uses its own token, so its own bucket.
    settings = Settings(model_repository=model_repository, model_name=MODEL_NAME,
                        port=free_port(), grpc_port=free_port(), rate_limit_rps=1,
                        rate_limit_burst=1, auth_tokens=["rest", "grpc", "once", "async"])
    with RunningServer(settings) as running:
        yield running


def _count(server: RunningServer, route: str, transport: str, status: str) -> float:
    return server.metrics.requests.labels(route, transport, status)._value.get()


def test_rest_retries_a_real_429(limited):
    before = _count(limited, "/v1/predict", "rest", "429")
    with RestClient(limited.url, token="rest", timeout=30) as client:
        client.predict(jpeg_bytes(), boxes=[[100, 50, 80, 120]])
        start = time.monotonic()
        result = client.predict(jpeg_bytes(), boxes=[[100, 50, 80, 120]])
    assert result.persons and time.monotonic() - start >= 0.9
    assert _count(limited, "/v1/predict", "rest", "429") == before + 1


def test_grpc_retries_a_real_resource_exhausted(limited):
    before = _count(limited, PREDICT, "grpc", "RESOURCE_EXHAUSTED")
    with GrpcClient(limited.grpc_target, token="grpc", timeout=30) as client:
        client.predict(jpeg_bytes(), boxes=[[100, 50, 80, 120]])
        start = time.monotonic()
        result = client.predict(jpeg_bytes(), boxes=[[100, 50, 80, 120]])
    assert result.persons and time.monotonic() - start >= 0.9
    assert _count(limited, PREDICT, "grpc", "RESOURCE_EXHAUSTED") == before + 1


def test_without_retries_the_429_comes_back(limited):
    no_retry = RetryPolicy(max_attempts=1)
    with RestClient(limited.url, token="once", retry=no_retry) as rest, \
            GrpcClient(limited.grpc_target, token="once", retry=no_retry) as grpc_client:
        rest.model()
        with pytest.raises(ApiError) as caught:
            rest.model()
        e = caught.value
        assert e.status == 429 and e.code == "rate_limited" and e.retry_after == 1.0
        assert e.message.startswith("Rate limit of 1 requests/s (burst 1) exceeded")
        # The bucket is shared with gRPC (same token): RESOURCE_EXHAUSTED with retry-after.
        with pytest.raises(ApiError) as caught:
            grpc_client.model()
        assert caught.value.code == "RESOURCE_EXHAUSTED" and caught.value.retry_after == 1.0


def test_async_rest_retries_a_real_429_and_tokens_are_checked(limited):
    async def go():
        async with AsyncRestClient(limited.url, token="async", timeout=30) as client:
            await client.model()
            return await client.model()

    assert run(go()).name == MODEL_NAME
    with RestClient(limited.url, token="wrong") as rest, pytest.raises(ApiError) as caught:
        rest.model()
    assert caught.value.status == 401 and caught.value.message == "Missing or invalid bearer token"
