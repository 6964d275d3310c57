"""Requests without boxes go through the person detector (service.detector, service.core).

Unit tests run the core with a stand-in detector that finds coloured squares (its own logic
under test: windows, the letterbox back to pixels, merging, thresholds, crops); the integration
tests run the real gateway with the committed detector over REST and gRPC on a real photo.
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
from posecontract.detection import (
    BOX_TO_CROP,
    CROP_FROM_CIRCLE,
    DETECTOR_CONTRACT,
    DETECTOR_NAME,
    NUM_ANCHORS,
)
from service.backends.base import ModelInfo
from service.core import PoseService
from service.detector import PersonDetector, make_detector
from service.options import PredictOptions
from service.settings import Settings
from tests.conftest import MODEL_NAME
from tests.service.conftest import RunningServer, free_port
from tests.service.test_core import BlobBackend

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = ROOT / "data" / "photos"
# Stand-in people: a square per colour channel, with the score the stand-in detector gives it.
SCORES = {0: 0.9, 1: 0.7, 2: 0.3}


class SquareDetector(BlobBackend):
    """A stand-in detector backend: in each window, one detection per colour channel with a
    bright square, its mid-hip keypoint at the square's centre and its full-body circle's
    radius half the square's side."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def info(self) -> ModelInfo:
        return ModelInfo("squares", "7")

    async def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        self.calls.append(len(images))
        boxes = np.zeros((len(images), NUM_ANCHORS, 12), np.float32)
        scores = np.zeros((len(images), NUM_ANCHORS), np.float32)
        for i, image in enumerate(images.astype(np.float64)):
            for c, score in SCORES.items():
                others = np.delete(image, c, axis=0).max(axis=0)
                ys, xs = np.nonzero(image[c] - others > 128)
                if len(xs) < 4:
                    continue
                cx, cy = (xs.mean() + 0.5) / 224, (ys.mean() + 0.5) / 224
                half = (xs.max() - xs.min() + 1) / 2 / 224
                row = 100 * c  # anchors far apart: each square its own detection
                boxes[i, row] = [cx, cy, 0.1, 0.1, cx, cy, cx, cy - half, cx, cy, cx, cy]
                scores[i, row] = score
        return {"boxes": boxes, "scores": scores}


class StillPose(BlobBackend):
    """A stand-in pose model: every joint at the crop's centre."""

    async def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        n = len(images)
        maps = np.full((n, 17, 32, 32), 1 / 1024, np.float32)
        return {"coords": np.zeros((n, 17, 3), np.float32),
                "coord_std": np.full((n, 17, 3), 0.02, np.float32),
                "heatmap_xy": maps, "heatmap_zy": maps, "heatmap_xz": maps}


def _squares(width: int, height: int, squares: dict[int, tuple[float, float, float]]) -> bytes:
    """A PNG with a square of colour channel c at (centre x, centre y, side) for each c."""
    image = np.zeros((height, width, 3), np.uint8)
    for c, (x, y, side) in squares.items():
        image[round(y - side / 2):round(y + side / 2), round(x - side / 2):round(x + side / 2),
              c] = 255
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _serve(data: bytes, options: PredictOptions | None = None, **settings):
    async def go():
        s = Settings(max_batch_wait_ms=1, **settings)
        detector = SquareDetector()
        service = PoseService(s, StillPose(),
                              detector=PersonDetector(detector, min_score=s.detector_min_score,
                                                      tiles=s.detector_tiles))
        await service.start()
        try:
            return await service.predict(data, "image/png", options or PredictOptions()), \
                detector.calls
        finally:
            await service.stop()
    return asyncio.run(go())


def test_every_person_above_the_score_is_answered_best_first():
    # A wide picture (2.4:1): the whole and four square tiles see the people, each person in
    # several windows; each is answered once.
    image = _squares(1200, 500, {0: (300, 250, 120), 1: (900, 200, 80), 2: (600, 250, 100)})
    result, calls = _serve(image)
    assert calls == [5]  # the five windows in one detector batch
    assert [p.box_source for p in result.persons] == ["detector", "detector"]
    assert [p.detection_score for p in result.persons] == pytest.approx([0.9, 0.7])
    along, per = CROP_FROM_CIRCLE["centre_along"], CROP_FROM_CIRCLE["side_per_radius"]
    for person, (x, y, side) in zip(result.persons, [(300, 250, 120), (900, 200, 80)],
                                    strict=True):
        radius = side / 2
        assert person.crop_centre == pytest.approx((x, y - along * radius), abs=3)
        # The stand-in measures a square's side to a window pixel: the whole picture shows the
        # 80-pixel square 15 window pixels wide, so one pixel is 7 %.
        assert person.crop_side == pytest.approx(per * radius, rel=0.1)
        # The box is the square whose 1.5x crop is that crop.
        assert person.box.w == pytest.approx(person.crop_side / 1.5, rel=1e-6)
    assert "detect" in result.timings_ms and "model" in result.timings_ms
    assert "model_pass1" not in result.timings_ms


def test_the_score_threshold_and_max_persons_apply():
    image = _squares(1200, 500, {0: (300, 250, 120), 1: (900, 200, 80), 2: (600, 250, 100)})
    result, _ = _serve(image, detector_min_score=0.2)
    assert [p.detection_score for p in result.persons] == pytest.approx([0.9, 0.7, 0.3])
    result, _ = _serve(image, max_persons=1)
    assert [p.detection_score for p in result.persons] == pytest.approx([0.9])
    result, calls = _serve(image, detector_tiles=False)
    assert calls == [1] and len(result.persons) == 2


def test_nobody_found_answers_no_person_and_runs_no_pose_pass():
    result, _ = _serve(_squares(640, 480, {}))
    assert result.persons == []
    assert "detect" in result.timings_ms
    assert not any(k.startswith("model") for k in result.timings_ms)


def test_boxes_in_the_request_skip_the_detector():
    image = _squares(640, 480, {0: (300, 250, 120)})
    from service.options import Box

    result, calls = _serve(image, PredictOptions(boxes=[Box(x=240, y=190, w=120, h=120)]))
    assert calls == [] and [p.box_source for p in result.persons] == ["request"]
    assert result.persons[0].detection_score is None


def test_a_repository_without_the_detector_keeps_the_whole_image_pass(tmp_path, caplog):
    settings = Settings(model_repository=tmp_path, model_name=MODEL_NAME)
    assert make_detector(settings) is None
    assert "no person detector" in caplog.text
    assert make_detector(settings.model_copy(update={"detector_model": ""})) is None
    (tmp_path / DETECTOR_NAME).mkdir()
    detector = make_detector(settings)
    assert detector is not None and detector.backend.contract == DETECTOR_CONTRACT


# -- the real detector, through the real gateway ------------------------------------------------


# The real thing: the committed default model (ONNX Runtime) and the committed detector, so
# that tracks follow real poses of real people.
DEFAULT_MODEL = "margipose-lite"


@pytest.fixture(scope="module")
def server():
    settings = Settings(model_repository=ROOT / "model_repository", model_name=DEFAULT_MODEL,
                        runtime="onnxruntime", port=free_port(), grpc_port=free_port(),
                        max_persons=4)
    with RunningServer(settings) as running:
        yield running


# Hips read off frame 75 by eye: the woman walking and the man standing on the box.
HIPS = [(1280, 728), (636, 285)]


def _near_hips(crop_centres: list[tuple[float, float]]) -> None:
    for hip in HIPS:
        dist = [np.hypot(c[0] - hip[0], c[1] - hip[1]) for c in crop_centres]
        assert min(dist) < 80, (hip, crop_centres)


def test_rest_finds_both_people_of_a_real_frame(server):
    data = (PHOTOS / "sports2d_frame075.jpg").read_bytes()
    with httpx.Client(base_url=server.url, timeout=60) as client:
        body = client.post("/v1/predict", files={"image": ("f.jpg", data, "image/jpeg")}).json()
        model = client.get("/v1/model").json()
        metrics = client.get("/metrics").text
    persons = body["persons"]
    assert [p["box_source"] for p in persons] == ["detector", "detector"]
    scores = [p["detection_score"] for p in persons]
    assert scores == sorted(scores, reverse=True) and min(scores) >= 0.6
    # The crop centre sits a little above the mid-hip keypoint (0.07 radii).
    _near_hips([tuple(p["crop"]["centre"]) for p in persons])
    assert model["detector"] == {"name": DETECTOR_NAME, "version": "1", "backend": "local"}
    assert 'margipose_stage_duration_seconds_count{stage="detect"}' in metrics
    assert 'detector="person-detector"' in metrics


def test_grpc_finds_both_people_and_nobody_in_an_empty_region(server):
    image = Image.open(PHOTOS / "sports2d_frame225.jpg").crop((0, 0, 1300, 994))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=92)
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pose_pb2_grpc.PoseServiceStub(channel)
        found = stub.Predict(pose_pb2.PredictRequest(
            image=(PHOTOS / "sports2d_frame075.jpg").read_bytes()), timeout=60)
        empty = stub.Predict(pose_pb2.PredictRequest(image=buf.getvalue()), timeout=60)
        described = stub.GetModel(pose_pb2.GetModelRequest(), timeout=10)
    assert [p.box_source for p in found.persons] == ["detector", "detector"]
    assert all(p.HasField("detection_score") and p.detection_score >= 0.6
               for p in found.persons)
    _near_hips([(p.crop.centre.x, p.crop.centre.y) for p in found.persons])
    assert list(empty.persons) == [] and "detect" in empty.timings_ms
    assert described.HasField("detector") and described.detector.name == DETECTOR_NAME


def test_the_service_crops_a_detection_as_it_would_crop_a_request_box():
    from service.core import CROP_MARGIN

    assert CROP_MARGIN == BOX_TO_CROP


# -- StreamPredict: track ids and smoothing, over the real gateway --------------------------------


def _shifted_frames(count: int, step: int = 4) -> list[bytes]:
    """Frame 75 panned `step` pixels a frame: both people move left by that much."""
    image = Image.open(PHOTOS / "sports2d_frame075.jpg")
    out = []
    for i in range(count):
        buf = io.BytesIO()
        image.crop((i * step, 0, i * step + 1600, 994)).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _gauge(server, name: str) -> float:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def test_stream_gives_each_person_a_track_id_that_stays(server):
    frames = _shifted_frames(6)
    requests = [pose_pb2.PredictRequest(image=f, timestamp_s=i / 30) for i, f in
                enumerate(frames)]
    # A frame with a bad smoothing option is answered inline and the stream goes on.
    bad = pose_pb2.PredictRequest(image=frames[0], timestamp_s=0.1)
    bad.tracking.min_cutoff = -1
    requests.insert(3, bad)
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pose_pb2_grpc.PoseServiceStub(channel)
        answers = list(stub.StreamPredict(iter(requests), timeout=120))
    assert answers[3].HasField("error") and "tracking.min_cutoff" in answers[3].error.message
    answers = answers[:3] + answers[4:]
    by_id: dict[int, list[tuple[float, float]]] = {}
    for answer in answers:
        assert len(answer.persons) == 2 and all(p.HasField("track_id") for p in answer.persons)
        for p in answer.persons:
            by_id.setdefault(p.track_id, []).append((p.crop.centre.x, p.crop.centre.y))
    assert sorted(by_id) == [1, 2] and all(len(v) == 6 for v in by_id.values())
    for centres in by_id.values():  # each id stays on one person: a few pixels a frame
        steps = np.linalg.norm(np.diff(np.array(centres), axis=0), axis=1)
        assert steps.max() < 40
    assert _gauge(server, "margipose_tracks") == 0  # the stream ended: its tracks are gone
    assert _gauge(server, "margipose_open_streams") == 0


def test_smoothing_can_be_turned_off_and_predict_has_no_track_ids(server):
    frames = _shifted_frames(3)

    def stream(smooth: bool) -> list:
        requests = []
        for i, f in enumerate(frames):
            r = pose_pb2.PredictRequest(image=f, timestamp_s=i / 30)
            r.tracking.smooth = smooth
            requests.append(r)
        with grpc.insecure_channel(server.grpc_target) as channel:
            return list(pose_pb2_grpc.PoseServiceStub(channel).StreamPredict(iter(requests),
                                                                              timeout=120))

    raw, smoothed = stream(False), stream(True)
    with grpc.insecure_channel(server.grpc_target) as channel:  # unset: not smoothed
        default = list(pose_pb2_grpc.PoseServiceStub(channel).StreamPredict(
            iter([pose_pb2.PredictRequest(image=f, timestamp_s=i / 30)
                  for i, f in enumerate(frames)]), timeout=120))
    with grpc.insecure_channel(server.grpc_target) as channel:
        single = pose_pb2_grpc.PoseServiceStub(channel).Predict(
            pose_pb2.PredictRequest(image=frames[2]), timeout=60)
    # Unsmoothed, a stream's frame is Predict's answer; smoothed, later frames differ.
    pixels = lambda m: np.array([[j.pixel.x, j.pixel.y] for p in sorted(  # noqa: E731
        m.persons, key=lambda p: p.crop.centre.x) for j in p.joints])
    # Frames of a stream may share the detector's and the pose model's batches with others:
    # equal up to float32 rounding through the crops (0.1 px, as tests/poseclient/test_grpc.py);
    # smoothing moves the third frame's joints by ~3 px here (the 4 px/frame pan lags).
    np.testing.assert_allclose(pixels(raw[2]), pixels(single), atol=0.1)
    np.testing.assert_allclose(pixels(default[2]), pixels(single), atol=0.1)
    np.testing.assert_allclose(pixels(smoothed[0]), pixels(raw[0]), atol=0.1)
    assert np.abs(pixels(smoothed[2]) - pixels(raw[2])).max() > 1.0
    assert not any(p.HasField("track_id") for p in single.persons)


def test_a_client_that_leaves_mid_stream_frees_its_tracks(server):
    import threading
    import time

    frames = _shifted_frames(2)
    release = threading.Event()

    def requests():
        for f in frames:
            yield pose_pb2.PredictRequest(image=f)
        release.wait(30)  # the client keeps the stream open, then goes away

    with grpc.insecure_channel(server.grpc_target) as channel:
        call = pose_pb2_grpc.PoseServiceStub(channel).StreamPredict(requests(), timeout=120)
        got = [next(call), next(call)]
        assert all(len(a.persons) == 2 for a in got)
        assert _gauge(server, "margipose_tracks") == 2
        assert _gauge(server, "margipose_open_streams") == 1
        call.cancel()
        release.set()
    deadline = time.monotonic() + 10
    while _gauge(server, "margipose_tracks") != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gauge(server, "margipose_tracks") == 0
    assert _gauge(server, "margipose_open_streams") == 0


def test_video_mode_runs_the_detector_every_n_frames_and_tracks_between(server):
    frames = _shifted_frames(8)
    requests = []
    for i, f in enumerate(frames):
        r = pose_pb2.PredictRequest(image=f, timestamp_s=i / 30)
        r.tracking.detect_every = 4
        requests.append(r)
    bad = pose_pb2.PredictRequest(image=frames[0])
    bad.tracking.detect_every = 0
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pose_pb2_grpc.PoseServiceStub(channel)
        answers = list(stub.StreamPredict(iter(requests), timeout=120))
        refused = list(stub.StreamPredict(iter([bad]), timeout=60))
    sources = [sorted({p.box_source for p in a.persons}) for a in answers]
    assert sources == [["detector"], ["track"], ["track"], ["track"],
                       ["detector"], ["track"], ["track"], ["track"]]
    assert all(sorted(p.track_id for p in a.persons) == [1, 2] for a in answers)
    assert all("detect" not in a.timings_ms for a, s in zip(answers, sources, strict=True)
               if s == ["track"])
    assert "tracking.detect_every must be 1 to 1000" in refused[0].error.message


def test_the_demo_page_says_the_detector_found_them_and_draws_their_scores(server):
    from tests.service.test_demo_page import _chrome, _wait_done

    browser = _chrome()
    try:
        browser.get(server.url + "/")
        browser.find_element("id", "file").send_keys(str(PHOTOS / "sports2d_frame075.jpg"))
        _wait_done(browser, timeout=120)
        status = browser.find_element("id", "status").text
        assert status.startswith("2 persons found by the person detector"), status
        shown = json.loads(browser.find_element("id", "json").get_attribute("textContent"))
        assert [p["box_source"] for p in shown["persons"]] == ["detector", "detector"]
        assert all(p["detection_score"] >= 0.6 for p in shown["persons"])
    finally:
        browser.quit()
