"""Request ids on both transports, through the real gateway: one rule (service.gateway), ids
that follow it echoed as they are, ids that break it replaced by a new one (said in
`x-request-id-replaced`), never breaking headers, metadata, logs or metrics, never hiding the
call's real error."""

import logging
import re
import socket
from collections.abc import Iterator

import grpc
import pytest

from poseapi.grpc_gen.pose.v1 import pose_pb2, pose_pb2_grpc
from service.gateway import REQUEST_ID_MAX_CHARS, valid_request_id
from service.grpc import PREDICT, STREAM_PREDICT

from .conftest import jpeg_bytes

NEW_ID = re.compile(r"[0-9a-f]{32}")
# Non-ASCII, a control character, a line break with a forged JSON log line, far too long, and
# one character over the limit.
BAD_IDS = ["caf\u00e9-42", "a\x01b", 'x"}\n{"level": "error", "message": "forged',
           "r" * 100_000, "r" * (REQUEST_ID_MAX_CHARS + 1)]
GOOD_IDS = ["trace-7f3a 01/02", "~" * REQUEST_ID_MAX_CHARS, "a"]


@pytest.fixture(scope="module")
def stub(server) -> Iterator[pose_pb2_grpc.PoseServiceStub]:
    # Room for the 100,000-character id in the request message.
    with grpc.insecure_channel(server.grpc_target) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        yield pose_pb2_grpc.PoseServiceStub(channel)


def _count(server, route: str, transport: str, status: str) -> float:
    return server.metrics.registry.get_sample_value(
        "margipose_requests_total",
        {"route": route, "transport": transport, "status": status}) or 0.0


def test_the_rule():
    assert all(valid_request_id(i) for i in GOOD_IDS)
    assert not any(valid_request_id(i) for i in [*BAD_IDS, "", " lead", "trail ", "\x7f"])


@pytest.mark.parametrize("bad", BAD_IDS, ids=["non-ascii", "control", "forged-log", "100k",
                                               "one-over"])
def test_grpc_bad_id_is_replaced_and_the_real_error_comes_through(server, stub, bad, caplog):
    caplog.set_level(logging.INFO, logger="margipose.access")
    before = _count(server, PREDICT, "grpc", "INVALID_ARGUMENT")
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(pose_pb2.PredictRequest(image=b"", request_id=bad), timeout=30)
    error = raised.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "The image is empty" in error.details()
    trailers = dict(error.trailing_metadata())
    assert NEW_ID.fullmatch(trailers["x-request-id"])
    assert "printable ASCII" in trailers["x-request-id-replaced"]
    # The metrics count what the client saw; the access log has the new id, not the given one.
    assert _count(server, PREDICT, "grpc", "INVALID_ARGUMENT") == before + 1
    lines = [r for r in caplog.records if r.name == "margipose.access" and r.path == PREDICT]
    assert lines and all(bad not in r.getMessage() for r in caplog.records)


def test_grpc_bad_id_on_success_and_in_a_stream(server, stub):
    answer, call = stub.Predict.with_call(
        pose_pb2.PredictRequest(image=jpeg_bytes(), request_id="caf\u00e9"), timeout=60)
    trailers = dict(call.trailing_metadata())
    assert NEW_ID.fullmatch(answer.request_id) and trailers["x-request-id"] == answer.request_id
    assert "x-request-id-replaced" in trailers
    before = _count(server, STREAM_PREDICT, "grpc", "INVALID_ARGUMENT")
    frames = [pose_pb2.PredictRequest(image=b"", request_id="\x00" * 3),
              pose_pb2.PredictRequest(image=jpeg_bytes(), request_id="kept-1")]
    first, second = stub.StreamPredict(iter(frames), timeout=60)
    assert NEW_ID.fullmatch(first.request_id) and "The image is empty" in first.error.message
    assert second.request_id == "kept-1" and not second.HasField("error")
    assert _count(server, STREAM_PREDICT, "grpc", "INVALID_ARGUMENT") == before + 1


def test_grpc_metadata_id_follows_the_same_rule(stub):
    answer, call = stub.Predict.with_call(
        pose_pb2.PredictRequest(image=jpeg_bytes()), timeout=60,
        metadata=(("x-request-id", "m" * (REQUEST_ID_MAX_CHARS + 1)),))
    assert NEW_ID.fullmatch(answer.request_id)
    assert "x-request-id-replaced" in dict(call.trailing_metadata())
    model, call = stub.GetModel.with_call(pose_pb2.GetModelRequest(), timeout=30,
                                          metadata=(("x-request-id", "m" * 500),))
    assert model.joints and "x-request-id-replaced" in dict(call.trailing_metadata())


@pytest.mark.parametrize("good", GOOD_IDS)
def test_valid_ids_are_echoed_as_they_are(stub, client, good):
    answer, call = stub.Predict.with_call(
        pose_pb2.PredictRequest(image=jpeg_bytes(), request_id=good), timeout=60)
    assert answer.request_id == good
    assert "x-request-id-replaced" not in dict(call.trailing_metadata())
    response = client.post("/v1/predict", content=jpeg_bytes(),
                           headers={"Content-Type": "image/jpeg", "X-Request-ID": good})
    assert response.status_code == 200 and response.headers["x-request-id"] == good
    assert "x-request-id-replaced" not in response.headers


def _raw_post(server, request_id: bytes) -> tuple[str, dict[str, str]]:
    """POST an empty JPEG body with `request_id` as raw header bytes: the status line, headers."""
    host, port = server.url.removeprefix("http://").split(":")
    head = (b"POST /v1/predict HTTP/1.1\r\nHost: test\r\nContent-Type: image/jpeg\r\n"
            b"Content-Length: 0\r\nConnection: close\r\nX-Request-ID: " + request_id + b"\r\n\r\n")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status, *lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    return status, {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines)}


@pytest.mark.parametrize("raw", ["caf\u00e9".encode(), b"r" * 5000, b"tab\there"],
                         ids=["utf8", "long", "tab"])
def test_rest_bad_id_is_replaced_and_the_real_error_comes_through(server, raw):
    before = _count(server, "/v1/predict", "rest", "422")
    status, headers = _raw_post(server, raw)
    assert " 422 " in status  # the empty image's own error
    assert NEW_ID.fullmatch(headers["x-request-id"])
    assert "printable ASCII" in headers["x-request-id-replaced"]
    assert _count(server, "/v1/predict", "rest", "422") == before + 1
