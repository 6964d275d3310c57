"""The core re-frames a person seen only in part (posecontract.framing), and only them.

Unit tests of the core's logic with a stand-in backend: the "person" is a red disc on the head
of an upright body whose size follows the disc's (BODY_TEMPLATE, the disc's radius `R0` of the
crop's half-side when the crop frames the whole body); the stand-in says a joint is seen when it
falls inside the crop. Then the real path: the committed default model over REST and gRPC on
the committed head-and-shoulders portrait.
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from PIL import Image

from poseapi.grpc_gen.pose.v1 import pose_pb2, pose_pb2_grpc
from posecontract.framing import BODY_TEMPLATE
from posecontract.skeleton import NUM_JOINTS, joint_index
from service.backends.base import ModelInfo
from service.core import PoseService
from service.errors import Overloaded
from service.options import Box, PredictOptions
from service.settings import Settings
from tests.service.conftest import RunningServer, free_port
from tests.service.test_core import BlobBackend

R0 = 0.06
HEAD = joint_index("head")
DISC = (320.0, 100.0, 12.0)  # centre and radius in source pixels
# Where the stand-in's whole body is framed: side 2 r / R0, centred below the head.
FULL_SIDE = 2 * DISC[2] / R0
FULL_CENTRE = (DISC[0], DISC[1] - BODY_TEMPLATE[HEAD, 1] * FULL_SIDE / 2)
TIGHT = Box(x=290, y=70, w=60, h=80)  # head and shoulders: crop side 120, a third of the body's
WHOLE = Box(x=FULL_CENTRE[0] - FULL_SIDE / 3, y=FULL_CENTRE[1] - FULL_SIDE / 3,
            w=FULL_SIDE / 1.5, h=FULL_SIDE / 1.5)


class DiscBackend(BlobBackend):
    """Unit-test stand-in for a model with the visibility head (see the module doc)."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def info(self) -> ModelInfo:
        return ModelInfo("disc", "1")

    async def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        n = len(images)
        self.calls.append(n)
        coords = np.zeros((n, NUM_JOINTS, 3), np.float32)
        visibility = np.zeros((n, NUM_JOINTS), np.float32)
        for i, image in enumerate(images.astype(np.float64)):
            red = image[0] - image[1:].max(axis=0) > 128
            rows, cols = np.nonzero(red)
            half = image.shape[-1] / 2
            centre = np.array([(cols + 0.5).mean(), (rows + 0.5).mean()]) / half - 1
            scale = np.sqrt(red.sum() / np.pi) / half / R0
            xy = scale * BODY_TEMPLATE + (centre - scale * BODY_TEMPLATE[HEAD])
            coords[i, :, :2] = xy
            visibility[i] = np.where(np.abs(xy).max(axis=1) < 1, 0.95, 0.02)
        std = np.full((n, NUM_JOINTS, 3), 0.02, np.float32)
        maps = np.full((n, NUM_JOINTS, 32, 32), 1 / 1024, np.float32)
        return {"coords": coords, "coord_std": std, "heatmap_xy": maps, "heatmap_zy": maps,
                "heatmap_xz": maps, "visibility": visibility}


def _disc_image() -> bytes:
    rows, cols = np.indices((480, 640)) + 0.5
    image = np.zeros((480, 640, 3), np.uint8)
    image[(cols - DISC[0]) ** 2 + (rows - DISC[1]) ** 2 <= DISC[2] ** 2] = (255, 0, 0)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _predict(boxes: list[Box], **settings):
    backend = DiscBackend()
    service = PoseService(Settings(max_batch_wait_ms=1, **settings), backend)

    async def run():
        await service.start()
        try:
            return await service.predict(_disc_image(), "image/png", PredictOptions(boxes=boxes))
        finally:
            await service.stop()

    return asyncio.run(run()), backend.calls


def test_a_head_and_shoulders_box_is_run_again_where_the_whole_body_would_be():
    result, calls = _predict([TIGHT])
    assert calls == [1, 1]
    assert "model_reframe" in result.timings_ms
    (person,) = result.persons
    assert person.box_source == "request" and person.box.w == TIGHT.w  # the caller's box
    assert person.crop_side == pytest.approx(FULL_SIDE, rel=0.03)
    assert person.crop_centre == pytest.approx(FULL_CENTRE, abs=4)
    # the second pass framed the whole body: every joint seen, where the body has it
    assert np.all(person.pose.visibility >= 0.5)
    ankle = person.pose.pixels[joint_index("left_ankle")]
    want = np.array(FULL_CENTRE) + BODY_TEMPLATE[joint_index("left_ankle")] * FULL_SIDE / 2
    np.testing.assert_allclose(ankle, want, atol=5)


def test_a_whole_body_box_gets_one_pass():
    result, calls = _predict([WHOLE])
    assert calls == [1]
    assert "model_reframe" not in result.timings_ms
    assert result.persons[0].crop_side == pytest.approx(FULL_SIDE)


def test_only_the_partly_seen_person_of_a_request_is_run_again():
    result, calls = _predict([WHOLE, TIGHT])
    assert sum(calls) == 3 and calls[-1] == 1
    whole, tight = result.persons
    assert whole.crop_side == pytest.approx(FULL_SIDE)
    assert tight.crop_side == pytest.approx(FULL_SIDE, rel=0.03)


def test_under_load_the_first_pass_stands(monkeypatch):
    backend = DiscBackend()
    service = PoseService(Settings(max_batch_wait_ms=1), backend)
    submit, calls = service.batcher.submit, []

    async def full_on_the_second_call(images, deadline):
        calls.append(len(images))
        if len(calls) == 2:
            raise Overloaded("the queue is full")
        return await submit(images, deadline)

    monkeypatch.setattr(service.batcher, "submit", full_on_the_second_call)

    async def run():
        await service.start()
        try:
            return await service.predict(_disc_image(), "image/png",
                                         PredictOptions(boxes=[TIGHT]))
        finally:
            await service.stop()

    result = asyncio.run(run())
    assert calls == [1, 1]  # the re-framing pass was tried, refused, and the answer stands
    assert result.persons[0].crop_side == pytest.approx(1.5 * TIGHT.h)
    assert not any(k.endswith("reframe") for k in result.timings_ms)


def test_re_framing_can_be_turned_off():
    result, calls = _predict([TIGHT], reframe_partial=False)
    assert calls == [1]
    assert result.persons[0].crop_side == pytest.approx(1.5 * TIGHT.h)
    # the legs, beyond the tight crop, are said to be unseen
    assert result.persons[0].pose.visibility[joint_index("left_ankle")] < 0.5


# --- the real path: the committed default model, REST and gRPC -------------------------------

REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
PORTRAIT = REPOSITORY.parent / "data" / "photos" / "grace_hopper.jpg"
PORTRAIT_BOX = [40, 10, 430, 590]  # head and shoulders, cut by the image's bottom edge
SHOULDERS = [joint_index("right_shoulder"), joint_index("left_shoulder")]


@pytest.fixture(scope="module")
def default_model_servers():
    common = dict(model_repository=REPOSITORY, model_name="margipose-lite",
                  runtime="onnxruntime", torch_threads=1)
    with RunningServer(Settings(port=free_port(), grpc_port=free_port(), **common)) as on, \
         RunningServer(Settings(port=free_port(), grpc_port=0, reframe_partial=False,
                                **common)) as off:
        yield on, off


def _rest(server: RunningServer) -> dict:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        r = client.post("/v1/predict", content=PORTRAIT.read_bytes(),
                        headers={"Content-Type": "image/jpeg"},
                        params={"boxes": json.dumps([PORTRAIT_BOX])})
    assert r.status_code == 200, r.text
    return r.json()


def test_the_default_model_frames_the_portrait_as_a_whole_body(default_model_servers):
    on, off = default_model_servers
    framed, boxed = _rest(on), _rest(off)
    (person,), (plain,) = framed["persons"], boxed["persons"]
    assert plain["crop"]["side"] == pytest.approx(1.5 * max(PORTRAIT_BOX[2:]))
    assert "model_reframe" not in boxed["timings_ms"]
    # Re-framed: the whole body's crop is far larger than the box's (measured 2.3x)
    assert person["crop"]["side"] > 1.5 * plain["crop"]["side"]
    assert "model_reframe" in framed["timings_ms"]
    # and the shoulders come out at her shoulders: measured 387 px apart (her uniform's shoulder
    # seams are about 320 apart), against 177 px from the box's own crop (both on the left half)
    def spread(body: dict) -> float:
        xs = [body["joints"][j]["pixel"][0] for j in SHOULDERS]
        return abs(xs[1] - xs[0])

    assert spread(person) > 280 and spread(plain) < 250
    legs = [joint_index(n) for n in ("left_knee", "right_knee", "left_ankle", "right_ankle")]
    assert all(person["joints"][j]["visibility"] < 0.5 for j in legs)
    # gRPC answers with the same crop
    with grpc.insecure_channel(on.grpc_target) as channel:
        reply = pose_pb2_grpc.PoseServiceStub(channel).Predict(pose_pb2.PredictRequest(
            image=PORTRAIT.read_bytes(), boxes=[pose_pb2.Box(x=40, y=10, w=430, h=590)]),
            timeout=60)
    (message,) = reply.persons
    assert message.crop.side == pytest.approx(person["crop"]["side"], rel=1e-6)
    assert "model_reframe" in reply.timings_ms
    # Prometheus counts the re-framed requests (REST and gRPC), and none where it is off
    for server, want in ((on, 2.0), (off, 0.0)):
        text = httpx.get(f"{server.url}/metrics", timeout=30).text
        assert f"margipose_reframed_requests_total {want}" in text
