"""gRPC through the real gateway (grpc.aio server in the same loop as REST) and generated stubs."""

import io
import json
import queue
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image

from poseapi.grpc_gen.pose.v1 import pose_pb2, pose_pb2_grpc
from posecontract.skeleton import JOINT_NAMES, ROOT
from service.grpc import peer_host
from service.settings import Settings

from .conftest import MODEL_NAME, RunningServer, free_port, jpeg_bytes

PREDICT = "/pose.v1.PoseService/Predict"


@pytest.fixture(scope="module")
def channel(server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_target) as ch:
        grpc.channel_ready_future(ch).result(timeout=30)
        yield ch


@pytest.fixture(scope="module")
def stub(channel) -> pose_pb2_grpc.PoseServiceStub:
    return pose_pb2_grpc.PoseServiceStub(channel)


def _request(image: bytes | None = None, **fields) -> pose_pb2.PredictRequest:
    fields.setdefault("content_type", "image/jpeg")
    return pose_pb2.PredictRequest(image=jpeg_bytes() if image is None else image, **fields)


def _vectors(joints, field: str) -> np.ndarray:
    return np.array([[getattr(getattr(j, field), a) for a in "xyz"
                      if hasattr(getattr(j, field), a)] for j in joints])


def test_get_model(stub):
    model = stub.GetModel(pose_pb2.GetModelRequest(), timeout=30)
    assert list(model.joints) == list(JOINT_NAMES)
    assert model.name == MODEL_NAME and model.version == "1" and model.backend == "local"
    assert model.input_size == 256 and model.parents[ROOT] == ROOT
    assert json_format.MessageToDict(model.card)["source"] == "test fixture, untrained"


def test_predict_with_a_box_matches_rest(stub, client):
    box = pose_pb2.Box(x=100, y=50, w=80, h=120)
    r = stub.Predict(_request(boxes=[box], request_id="abc"), timeout=30)
    assert r.request_id == "abc" and not r.HasField("error")
    assert (r.image.width, r.image.height) == (320, 240)
    assert r.intrinsics_source == "default_fov"
    assert r.intrinsics.cx == 160 and r.intrinsics.cy == 120 and r.intrinsics.fx > 0
    assert r.model.name == MODEL_NAME and r.model.backend == "local"
    (person,) = r.persons
    assert person.box == box and person.box_source == "request"
    assert person.crop.side == pytest.approx(180.0)  # 1.5 x the longer side
    assert (person.crop.centre.x, person.crop.centre.y) == pytest.approx((140.0, 110.0))
    assert [j.name for j in person.joints] == list(JOINT_NAMES)
    cam, rel = _vectors(person.joints, "camera_mm"), _vectors(person.joints, "relative_mm")
    assert np.allclose(rel, cam - cam[ROOT])
    assert person.root_depth_source == "knee_neck_prior"
    assert np.all(_vectors(person.joints, "uncertainty_mm") > 0)
    assert not person.HasField("heatmaps")
    assert {"decode", "model", "postprocess", "total"} <= set(r.timings_ms)

    # The same request over REST gives the same answer: one core behind both.
    rest = client.post("/v1/predict", content=jpeg_bytes(), headers={"Content-Type": "image/jpeg"},
                       params={"boxes": json.dumps([[100, 50, 80, 120]])}).json()
    rest_pixels = np.array([j["pixel"] for j in rest["persons"][0]["joints"]])
    grpc_pixels = _vectors(person.joints, "pixel")
    assert np.allclose(grpc_pixels, rest_pixels, atol=1e-2)
    assert person.root_depth_mm == pytest.approx(rest["persons"][0]["root_depth_mm"], rel=1e-4)


def test_predict_with_intrinsics_depth_and_f16_heatmaps(stub):
    request = _request(
        jpeg_bytes(seed=1),
        boxes=[pose_pb2.Box(x=10, y=20, w=100, h=150), pose_pb2.Box(x=150, y=30, w=90, h=160)],
        intrinsics=pose_pb2.CameraIntrinsics(fx=400, fy=410, cx=150, cy=115),
        root_depth_mm=3500, heatmaps=pose_pb2.HEATMAP_FORMAT_F16,
    )
    r = stub.Predict(request, timeout=30)
    assert r.intrinsics == request.intrinsics and r.intrinsics_source == "request"
    assert len(r.persons) == 2
    for person in r.persons:
        assert person.root_depth_mm == 3500 and person.root_depth_source == "request"
        hm = person.heatmaps
        assert hm.format == pose_pb2.HEATMAP_FORMAT_F16 and hm.dtype == "float16"
        assert list(hm.shape) == [3, 17, 32, 32]
        maps = np.frombuffer(hm.data, "<f2").reshape(hm.shape)  # raw bytes, not base64
        assert np.allclose(maps.astype(np.float32).sum(axis=(-2, -1)), 1, atol=1e-2)


def test_png_heatmaps_decode_back(stub):
    r = stub.Predict(_request(jpeg_bytes(seed=2), boxes=[pose_pb2.Box(x=50, y=50, w=100, h=100)],
                              heatmaps=pose_pb2.HEATMAP_FORMAT_PNG), timeout=30)
    hm = r.persons[0].heatmaps
    mosaic = np.array(Image.open(io.BytesIO(hm.data)))
    tiles = mosaic.reshape(3, 32, 17, 32).transpose(0, 2, 1, 3) / 65535.0
    maps = tiles * np.array(hm.scale).reshape(3, 17, 1, 1)
    assert np.allclose(maps.sum(axis=(-2, -1)), 1, atol=2e-3)


def test_auto_crop_and_request_id_from_metadata(stub):
    r, call = stub.Predict.with_call(_request(jpeg_bytes(seed=3), content_type=""), timeout=30,
                                     metadata=[("x-request-id", "from-metadata")])
    assert call.code() == grpc.StatusCode.OK and r.request_id == "from-metadata"
    (person,) = r.persons
    assert person.box_source == "auto" and person.box.w > 0 and person.box.h > 0
    assert person.crop.side == pytest.approx(1.5 * max(person.box.w, person.box.h), rel=1e-6)
    assert {"model_pass1", "model_pass2"} <= set(r.timings_ms)


def test_stream_answers_in_order_and_survives_a_bad_frame(stub):
    frames = [_request(jpeg_bytes(seed=i), request_id=f"frame-{i}") for i in range(5)]
    frames[2] = _request(jpeg_bytes()[:300], request_id="frame-2")  # truncated
    frames[3].boxes.add(x=10, y=10, w=0, h=50)  # a bad option on a good image
    answers = list(stub.StreamPredict(iter(frames), timeout=60))
    assert [a.request_id for a in answers] == [f"frame-{i}" for i in range(5)]
    assert answers[2].error.code == "invalid_image" and not answers[2].persons
    assert answers[3].error.code == "invalid_request"
    assert "must be > 0" in answers[3].error.message
    assert not answers[3].error.HasField("retry_after")
    for i in (0, 1, 4):
        assert not answers[i].HasField("error") and len(answers[i].persons) == 1


def test_stream_in_lockstep(stub):
    """A client that waits for each answer before sending the next frame is not stuck."""
    outbox: queue.Queue = queue.Queue()
    answers = stub.StreamPredict(iter(outbox.get, None), timeout=60)
    for i in range(3):
        outbox.put(_request(jpeg_bytes(seed=i), request_id=str(i)))
        assert next(answers).request_id == str(i)
    outbox.put(None)
    assert list(answers) == []


def test_a_cancelled_stream_leaves_the_service_clean(stub, server):
    outbox: queue.Queue = queue.Queue()
    answers = stub.StreamPredict(iter(outbox.get, None), timeout=60)
    outbox.put(_request(request_id="first"))
    assert next(answers).request_id == "first"
    for i in range(3):
        outbox.put(_request(jpeg_bytes(seed=i)))
    answers.cancel()
    outbox.put(None)
    deadline = time.monotonic() + 10
    in_flight = server.metrics.registry.get_sample_value
    while in_flight("margipose_in_flight_requests") or server.service.batcher.queue_depth:
        assert time.monotonic() < deadline, "frames of the cancelled stream still in flight"
        time.sleep(0.05)
    assert stub.Predict(_request(), timeout=30).persons


def _fails(call, code: grpc.StatusCode, fragment: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == code, info.value.details()
    assert fragment in info.value.details(), info.value.details()
    return info.value


def test_error_matrix_matches_rest_and_health_after(stub, channel, server):
    jpeg = jpeg_bytes()

    def predict(request):
        return lambda: stub.Predict(request, timeout=30)

    bad = grpc.StatusCode.INVALID_ARGUMENT
    big = grpc.StatusCode.RESOURCE_EXHAUSTED
    error = _fails(predict(_request(b"hello", content_type="text/plain", request_id="r1")),
                   bad, "image/jpeg")
    assert ("x-request-id", "r1") in tuple(error.trailing_metadata())
    _fails(predict(_request(jpeg[: len(jpeg) // 2])), bad, "")
    _fails(predict(_request(b"")), bad, "")
    # Over max_body_bytes but within the message limit: the core's 413 message.
    _fails(predict(_request(b"\0" * 2_010_000)), big, "2000000")
    # Over the message limit: gRPC refuses it before the core sees it.
    _fails(predict(_request(b"\0" * 2_100_000)), big, "")
    png = io.BytesIO()
    Image.new("RGB", (2500, 2000)).save(png, format="PNG")
    _fails(predict(_request(png.getvalue(), content_type="image/png")), big, "")
    for boxes, fragment in [
        ([(400, 10, 50, 50)], "outside"),
        ([(10, 10, 0, 50)], "must be > 0"),
        ([(10, 10, 5, 5)] * 5, "at most 4"),
        ([(float("nan"), 10, 5, 5)], "non-finite"),
    ]:
        request = _request(jpeg, boxes=[pose_pb2.Box(x=x, y=y, w=w, h=h) for x, y, w, h in boxes])
        _fails(predict(request), bad, fragment)
    k = pose_pb2.CameraIntrinsics(fx=0, fy=10, cx=1, cy=1)
    _fails(predict(_request(jpeg, intrinsics=k)), bad, "Focal lengths")
    _fails(predict(_request(jpeg, root_depth_mm=-5)), bad, "root_depth_mm")
    _fails(predict(_request(jpeg, timeout_s=-1)), bad, "timeout_s")
    _fails(predict(_request(jpeg, heatmaps=7)), bad, "heatmaps")
    # A field this server does not know (here number 99) is an unknown option, as on REST.
    raw = channel.unary_unary(PREDICT, request_serializer=None,
                              response_deserializer=pose_pb2.PredictResponse.FromString)
    unknown = _request(jpeg).SerializeToString() + b"\x98\x06\x01"
    _fails(lambda: raw(unknown, timeout=30), bad, "Unknown PredictRequest fields (numbers) [99]")

    # After all of that the service is healthy and answers a good request.
    health = health_pb2_grpc.HealthStub(channel)
    check = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert check.status == health_pb2.HealthCheckResponse.SERVING
    assert len(stub.Predict(_request(jpeg), timeout=30).persons) == 1
    assert server.service.batcher.queue_depth == 0


def test_health_and_reflection(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "pose.v1.PoseService"):
        r = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
        assert r.status == health_pb2.HealthCheckResponse.SERVING
    _fails(lambda: health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10),
           grpc.StatusCode.NOT_FOUND, "")

    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    ask = [reflection_pb2.ServerReflectionRequest(list_services=""),
           reflection_pb2.ServerReflectionRequest(file_containing_symbol="pose.v1.PoseService")]
    listed, described = list(reflection.ServerReflectionInfo(iter(ask), timeout=10))
    names = {s.name for s in listed.list_services_response.service}
    assert {"pose.v1.PoseService", "grpc.health.v1.Health"} <= names
    assert described.file_descriptor_response.file_descriptor_proto


def test_metrics_count_grpc_requests(stub, client):
    stub.Predict(_request(), timeout=30)
    _fails(lambda: stub.Predict(_request(b"hello", content_type="text/plain"), timeout=30),
           grpc.StatusCode.INVALID_ARGUMENT, "")
    list(stub.StreamPredict(iter([_request()]), timeout=30))
    text = client.get("/metrics").text
    for line in (
        f'margipose_requests_total{{route="{PREDICT}",status="OK",transport="grpc"}}',
        f'margipose_requests_total{{route="{PREDICT}",status="INVALID_ARGUMENT",transport="grpc"}}',
        'margipose_requests_total{route="/pose.v1.PoseService/StreamPredict",status="OK",'
        'transport="grpc"}',
        f'margipose_request_duration_seconds_count{{route="{PREDICT}",transport="grpc"}}',
    ):
        assert line in text, line


def test_peer_host():
    assert peer_host("ipv4:127.0.0.1:5678") == "127.0.0.1"
    assert peer_host("ipv6:[::1]:5678") == "::1"
    assert peer_host("unix:/tmp/s") == "unix:/tmp/s"


@pytest.fixture(scope="module")
def guarded(model_repository) -> Iterator[RunningServer]:
    settings = Settings(model_repository=model_repository, model_name=MODEL_NAME,
                        port=free_port(), grpc_port=free_port(), auth_tokens=["s3cret"],
                        rate_limit_rps=0.5, rate_limit_burst=2)
    with RunningServer(settings) as running:
        yield running


def test_grpc_requires_a_token_and_limits_rate(guarded):
    with grpc.insecure_channel(guarded.grpc_target) as ch:
        stub = pose_pb2_grpc.PoseServiceStub(ch)
        unauth = grpc.StatusCode.UNAUTHENTICATED
        _fails(lambda: stub.GetModel(pose_pb2.GetModelRequest(), timeout=30), unauth,
               "Missing or invalid bearer token")
        _fails(lambda: list(stub.StreamPredict(iter([_request()]), timeout=30)), unauth,
               "bearer token")
        # Health stays open to orchestrators.
        ok = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert ok.status == health_pb2.HealthCheckResponse.SERVING

        auth = [("authorization", "Bearer s3cret")]
        assert stub.GetModel(pose_pb2.GetModelRequest(), metadata=auth, timeout=30).name
        # The burst of 2 is used up by the call above and the first frame; the second frame
        # is limited inline and the stream goes on to answer the third.
        answers = list(stub.StreamPredict(iter([_request(), _request(), _request(b"")]),
                                          metadata=auth, timeout=30))
        assert not answers[0].HasField("error")
        assert answers[1].error.code == "rate_limited" and answers[1].error.retry_after > 0
        assert answers[2].error.code == "rate_limited"
        error = _fails(lambda: stub.Predict(_request(), metadata=auth, timeout=30),
                       grpc.StatusCode.RESOURCE_EXHAUSTED, "Rate limit")
        assert int(dict(error.trailing_metadata())["retry-after"]) >= 1


def test_graceful_shutdown_finishes_a_stream_in_flight(model_repository):
    settings = Settings(model_repository=model_repository, model_name=MODEL_NAME,
                        port=free_port(), grpc_port=free_port())
    running = RunningServer(settings).__enter__()
    try:
        with grpc.insecure_channel(running.grpc_target) as ch:
            stub = pose_pb2_grpc.PoseServiceStub(ch)
            outbox: queue.Queue = queue.Queue()
            answers = stub.StreamPredict(iter(outbox.get, None), timeout=60)
            outbox.put(_request(request_id="before"))
            assert next(answers).request_id == "before"

            running.loop.call_soon_threadsafe(running.gateway.stop)
            deadline = time.monotonic() + 30
            while True:  # wait until the server refuses new calls
                try:
                    stub.GetModel(pose_pb2.GetModelRequest(), timeout=5)
                except grpc.RpcError as exc:
                    # Refused: on this open connection gRPC cancels it, a new one is unavailable.
                    assert exc.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
                    break
                assert time.monotonic() < deadline, "the server still takes new calls"
                time.sleep(0.05)

            # The call in flight still gets its answers.
            outbox.put(_request(request_id="during"))
            outbox.put(None)
            rest = list(answers)
            assert [a.request_id for a in rest] == ["during"] and rest[0].persons
    finally:
        running.thread.join(timeout=60)
    assert not running.thread.is_alive()


def test_serve_process_stops_on_sigterm(model_repository, tmp_path):
    """The `serve` entry point: REST and gRPC up, then SIGTERM ends it cleanly."""
    port, grpc_port = free_port(), free_port()
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "--model-repository", str(model_repository),
         "--model-name", MODEL_NAME, "--port", str(port), "--grpc-port", str(grpc_port),
         "--log-level", "warning"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "serve did not become ready"
            time.sleep(0.1)
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
            health = health_pb2_grpc.HealthStub(ch)
            r = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert r.status == health_pb2.HealthCheckResponse.SERVING
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, (tmp_path / "serve.log").read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
