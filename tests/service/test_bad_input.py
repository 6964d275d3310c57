"""The bad-input corpus (deploy/badinput.py) against a real gateway, and slow uploads.

Every malformed request gets its documented status (or gRPC code), error code and message, and
afterwards the gateway is healthy: ready, serving good requests on both transports, nothing left
in flight, no 5xx recorded.
"""

import re
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from pydantic import ValidationError

from deploy import badinput
from service.settings import Settings

from .conftest import MODEL_NAME, RunningServer, free_port, jpeg_bytes

BODY_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def gateway(model_repository) -> Iterator[RunningServer]:
    """The `server` fixture's limits, and a one-second body timeout."""
    settings = Settings(model_repository=model_repository, model_name=MODEL_NAME,
                        port=free_port(), grpc_port=free_port(), max_body_bytes=2_000_000,
                        max_image_pixels=4_000_000, max_persons=4, max_batch_size=8,
                        body_timeout_s=BODY_TIMEOUT_S)
    with RunningServer(settings) as running:
        yield running


def _headers(length: int, content_type: str = "image/jpeg") -> bytes:
    return (f"POST /v1/predict HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def _closed(sock: socket.socket) -> bool:
    """Whether the server closed the connection (a reset: while our last byte was on its way)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _status(gateway: RunningServer, status: str) -> float:
    value = gateway.metrics.registry.get_sample_value(
        "margipose_requests_total", {"route": "/v1/predict", "transport": "rest", "status": status})
    return value or 0.0


def test_every_case_gets_its_documented_error_and_the_gateway_stays_healthy(gateway):
    results = badinput.run_corpus(gateway.url, gateway.grpc_target,
                                  badinput.Limits.of(gateway.settings))
    failed = [r for r in results if not r.ok]
    assert not failed, "\n" + badinput.table(failed)
    names = [r.name for r in results if r.transport != "health"]
    assert len(names) == len(badinput.CORPUS)  # every case ran, the slow ones included
    assert [r.name for r in results if r.transport == "health"] == [
        "health: a good REST predict during the slow uploads", "health: /health/ready",
        "health: a good REST predict", "health: grpc.health.v1 Check",
        "health: a good gRPC Predict", "health: margipose_in_flight_requests",
        "health: new 5xx / INTERNAL / UNKNOWN"]


def test_the_corpus_covers_the_issue():
    names = " | ".join(c.name for c in badinput.CORPUS).lower()
    for topic in ("zero-byte", "truncated jpeg", "truncated png", "random bytes", "text/plain",
                  "application/json", "video/mp4", "bomb", "max_image_pixels",
                  "content-length over", "chunked", "without an image", "two images",
                  "multipart over", "boundary", "negative size", "nan", "infinity", "outside",
                  "three numbers", "not json", "max_persons", "focal", "fx only",
                  "root_depth_mm", "timeout_s", "heatmaps", "unknown option", "slow-loris",
                  "garbage bytes as predictrequest", "empty image", "grpc size limit",
                  "streampredict"):
        assert topic in names, topic
    assert {c.transport for c in badinput.CORPUS} == {"rest", "grpc"}


def test_cli_prints_a_table_and_exits_0(gateway, capsys):
    args = badinput.get_args_parser().parse_args([
        "--rest", gateway.url, "--max-body-bytes", "2000000", "--max-image-pixels", "4000000",
        "--max-persons", "4"])
    assert badinput.main(args) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["case", "transport", "expected", "got", "ok", "ms"]
    assert "zero-byte body" in out and "FAIL" not in out
    assert "slow-loris" not in out  # no --body-timeout-s: the slow uploads are left out


def _timed_predicts(url: str, jpeg: bytes, n: int) -> list[float]:
    """Latencies of `n` good requests, one after the other."""
    latencies = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(n):
            start = time.perf_counter()
            r = client.post("/v1/predict", content=jpeg, headers={"Content-Type": "image/jpeg"},
                            params={"boxes": "[[100, 50, 80, 120]]"})
            assert r.status_code == 200, r.text
            latencies.append(time.perf_counter() - start)
    return latencies


def test_a_slow_upload_gets_408_while_others_are_served(gateway):
    jpeg = jpeg_bytes()
    baseline = min(_timed_predicts(gateway.url, jpeg, 3))
    latencies: list[float] = []

    def others() -> None:
        latencies.extend(_timed_predicts(gateway.url, jpeg, 3))

    with socket.create_connection(("127.0.0.1", gateway.settings.port), timeout=10) as sock:
        start = time.monotonic()
        sock.sendall(_headers(len(jpeg)))
        worker = threading.Thread(target=others)
        worker.start()
        sent = 0
        sock.settimeout(0.25)
        answer = b""
        while not answer:  # a few bytes per second until the server answers
            sock.sendall(jpeg[sent:sent + 1])
            sent += 1
            try:
                answer = sock.recv(65536)
            except TimeoutError:
                pass
        elapsed = time.monotonic() - start
        sock.settimeout(5)
        while b'"}}' not in answer:
            answer += sock.recv(65536)
        assert _closed(sock)
        worker.join()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer
    assert b"connection: close" in head.lower()
    match = re.fullmatch(
        r'\{"error":\{"code":"request_timeout","message":"The request body did not arrive '
        rf'within 1 s \((\d+) bytes received, Content-Length {len(jpeg)}\); send the whole '
        r'body within 1 s"\}\}', body.decode())
    assert match and 1 <= int(match[1]) <= sent, body
    assert BODY_TIMEOUT_S <= elapsed < BODY_TIMEOUT_S + 2
    # Served at their usual latency meanwhile (a wedged server would hold them for the 1 s).
    assert len(latencies) == 3 and max(latencies) < 5 * baseline + 0.5, (latencies, baseline)
    assert gateway.metrics.registry.get_sample_value("margipose_in_flight_requests") == 0


def test_a_slow_upload_that_ends_in_time_is_served(gateway):
    jpeg = jpeg_bytes()
    pieces = [jpeg[k:k + len(jpeg) // 4 + 1] for k in range(0, len(jpeg), len(jpeg) // 4 + 1)]
    with socket.create_connection(("127.0.0.1", gateway.settings.port), timeout=30) as sock:
        sock.sendall(_headers(len(jpeg)))
        for piece in pieces:  # about 0.6 s in all, under the 1 s body timeout
            time.sleep(0.15)
            sock.sendall(piece)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]


def test_a_client_that_hangs_up_mid_body_is_a_client_error(gateway):
    before_422, before_500 = _status(gateway, "422"), _status(gateway, "500")
    with socket.create_connection(("127.0.0.1", gateway.settings.port), timeout=10) as sock:
        sock.sendall(_headers(10_000) + b"\xff\xd8\xff" + b"\0" * 100)
        time.sleep(0.1)
    deadline = time.monotonic() + 5
    while _status(gateway, "422") == before_422:
        assert time.monotonic() < deadline, "the hung-up request was not counted as a 422"
        time.sleep(0.05)
    assert _status(gateway, "500") == before_500
    assert gateway.metrics.registry.get_sample_value("margipose_in_flight_requests") == 0


def test_body_timeout_must_be_positive():
    with pytest.raises(ValidationError, match="body_timeout_s"):
        Settings(body_timeout_s=0)
    assert Settings().body_timeout_s == 60.0
