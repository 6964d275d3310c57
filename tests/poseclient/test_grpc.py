"""GrpcClient and AsyncGrpcClient against the real gateway, compared with REST."""

import asyncio
import socket

import numpy as np
import pytest

from poseclient import (
    ApiError,
    AsyncGrpcClient,
    CallTimeout,
    FrameError,
    GrpcClient,
    PredictResult,
    RestClient,
    Unreachable,
)
from posecontract.geometry import Intrinsics
from posecontract.skeleton import JOINT_NAMES
from tests.service.conftest import free_port, jpeg_bytes, run

from .conftest import MODEL_NAME

BOX = [[100, 50, 80, 120]]


@pytest.fixture(scope="module")
def grpc_client(server):
    with GrpcClient(server.grpc_target, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def rest(server):
    with RestClient(server.url, timeout=60) as client:
        yield client


def _without_timings(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "timings_ms"}


@pytest.mark.parametrize("heatmaps", ["none", "f16", "png"])
def test_predict_gives_what_rest_gives(grpc_client, rest, heatmaps):
    k = Intrinsics(400, 410, 150, 115)
    g = grpc_client.predict(jpeg_bytes(seed=4), boxes=BOX, intrinsics=k, heatmaps=heatmaps)
    r = rest.predict(jpeg_bytes(seed=4), boxes=BOX, intrinsics=k, heatmaps=heatmaps)
    assert isinstance(g, PredictResult) and g.request_id
    # Field for field, heatmap bytes included (base64 on both sides in to_json).
    assert _without_timings(g.to_json()) == _without_timings(r.to_json())
    assert {"decode", "model", "postprocess", "total"} <= set(g.timings_ms)
    if heatmaps != "none":
        assert np.array_equal(g.persons[0].heatmaps, r.persons[0].heatmaps)


def test_model_gives_what_rest_gives(grpc_client, rest):
    model = grpc_client.model()
    assert model.name == MODEL_NAME and model.joints == JOINT_NAMES
    # A protobuf Struct turns every number into a float; the client turns whole ones back.
    assert model.to_json() == rest.model().to_json()


def test_stream_answers_every_frame_in_order(grpc_client, tmp_path):
    path = tmp_path / "f.jpg"
    path.write_bytes(jpeg_bytes(seed=7))
    answers = list(grpc_client.stream([jpeg_bytes(seed=5), b"\xff\xd8\xff broken", path],
                                      boxes=BOX))
    assert [type(a) for a in answers] == [PredictResult, FrameError, PredictResult]
    assert answers[1].code == "invalid_image" and answers[1].request_id
    alone = grpc_client.predict(path, boxes=BOX)
    # Frames of a stream may share a batch: equal up to float rounding.
    assert np.allclose(answers[2].persons[0].as_array(), alone.persons[0].as_array(), atol=0.1)


def test_errors_carry_the_services_message(grpc_client, server):
    with pytest.raises(ApiError) as caught:
        grpc_client.predict(jpeg_bytes(), boxes=[[1000, 1000, 10, 10]])
    e = caught.value
    assert e.code == "INVALID_ARGUMENT" and e.status is None and not e.retryable
    assert e.message == "Box 0 [1000.0, 1000.0, 10.0, 10.0] lies outside the 320x240 image"
    assert str(e) == f"{server.grpc_target} Predict answered INVALID_ARGUMENT: {e.message}"
    assert e.request_id


def test_unreachable_and_deadline(grpc_client):
    target = f"127.0.0.1:{free_port()}"
    with GrpcClient(target) as client, pytest.raises(Unreachable) as caught:
        client.model()
    assert str(caught.value).startswith(f"cannot reach {target} GetModel: ")
    # A server that accepts connections and never answers: the client's own deadline passes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        target = f"127.0.0.1:{silent.getsockname()[1]}"
        with GrpcClient(target) as client, pytest.raises(
                CallTimeout, match=rf"^{target} Predict did not answer within 0.5 s$"):
            client.predict(jpeg_bytes(), timeout=0.5)
    # The real gateway with a 1 us deadline: a race between the client's deadline and the
    # gateway's own check of the deadline it was sent (when the request gets there first, on a
    # slow or busy machine). Both are timeouts, told apart by who saw the deadline pass.
    try:
        grpc_client.predict(jpeg_bytes(), timeout=1e-6)
    except CallTimeout as e:
        assert str(e) == f"{grpc_client.target} Predict did not answer within 1e-06 s"
    except ApiError as e:
        assert e.code == "DEADLINE_EXCEEDED" and e.request_id
        assert e.message.startswith("The request deadline passed ")  # before or while cropping
    else:
        pytest.fail("a 1 us deadline was met")


def test_async_client_does_the_same(server, grpc_client):
    async def frames():
        for seed in (8, 9):
            await asyncio.sleep(0)
            yield jpeg_bytes(seed=seed)

    async def go():
        async with AsyncGrpcClient(server.grpc_target, timeout=60) as client:
            one = await client.predict(jpeg_bytes(seed=8), boxes=BOX, heatmaps=True)
            model = await client.model()
            streamed = [a async for a in client.stream(frames(), boxes=BOX)]
            listed = [a async for a in client.stream([jpeg_bytes(seed=8)], boxes=BOX)]
            with pytest.raises(ApiError, match="lies outside"):
                await client.predict(jpeg_bytes(), boxes=[[1000, 1000, 10, 10]])
        async with AsyncGrpcClient(f"127.0.0.1:{free_port()}") as client:
            with pytest.raises(Unreachable, match="cannot reach 127.0.0.1:"):
                await client.model()
        return one, model, streamed, listed

    one, model, streamed, listed = run(go())
    expected = grpc_client.predict(jpeg_bytes(seed=8), boxes=BOX, heatmaps=True)
    assert _without_timings(one.to_json()) == _without_timings(expected.to_json())
    assert model.name == MODEL_NAME
    assert [type(a) for a in streamed] == [PredictResult, PredictResult]
    for answer in (streamed[0], listed[0]):  # batched with other frames: up to float rounding
        assert np.allclose(answer.persons[0].as_array(), expected.persons[0].as_array(), atol=0.1)
