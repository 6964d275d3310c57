"""The core's crop and postprocessing agree: a synthetic round trip through a fake backend.

The fake backend (a unit-test stand-in for the model) finds three coloured blobs in the crop it
is given and reports where they are, in the model's normalised coordinates. If the service cut
the crop with one convention and mapped outputs back with another, the joints it returns would
not land on the blobs drawn in the original image.
"""

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from posecontract.geometry import Intrinsics
from posecontract.layout import INPUT_SIZE
from posecontract.skeleton import JOINT_NAMES, NUM_JOINTS, joint_index
from service.backends.base import ModelInfo
from service.core import PoseService
from service.errors import InvalidRequest
from service.options import Box, CameraIntrinsics, PredictOptions
from service.settings import Settings

BLOBS = {"head_top": 0, "left_ankle": 1, "right_wrist": 2}  # joint -> colour channel


class BlobBackend:
    """Reports the centroid of each colour channel's blob as that joint's (x, y)."""

    kind = "fake"

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def ready(self) -> bool:
        return True

    def info(self) -> ModelInfo:
        return ModelInfo("blobs", "1")

    async def infer(self, images: np.ndarray) -> dict[str, np.ndarray]:
        n = len(images)
        coords = np.zeros((n, NUM_JOINTS, 3), np.float32)
        coords[:, :, 2] = 0.0
        for i, image in enumerate(images.astype(np.float64)):
            for name, c in BLOBS.items():
                others = np.delete(image, c, axis=0).max(axis=0)
                weight = np.clip(image[c] - others, 0, None)
                rows, cols = np.indices(weight.shape) + 0.5  # pixel centres
                u = (weight * cols).sum() / weight.sum()
                v = (weight * rows).sum() / weight.sum()
                coords[i, joint_index(name), :2] = (u / 128 - 1, v / 128 - 1)
        std = np.full((n, NUM_JOINTS, 3), 0.02, np.float32)
        maps = np.full((n, NUM_JOINTS, 32, 32), 1 / 1024, np.float32)
        return {"coords": coords, "coord_std": std, "heatmap_xy": maps, "heatmap_zy": maps,
                "heatmap_xz": maps}


def _blob_image(width: int, height: int, centres: dict[str, tuple[float, float]]) -> bytes:
    rows, cols = np.indices((height, width)) + 0.5
    image = np.zeros((height, width, 3))
    for name, (u, v) in centres.items():
        image[..., BLOBS[name]] += 255 * np.exp(-((cols - u) ** 2 + (rows - v) ** 2) / (2 * 4.0**2))
    buf = io.BytesIO()
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


async def _predict(data: bytes, options: PredictOptions):
    service = PoseService(Settings(max_batch_wait_ms=1), BlobBackend())
    await service.start()
    try:
        return await service.predict(data, "image/png", options)
    finally:
        await service.stop()


@pytest.mark.parametrize("box", [(300, 100, 180, 260), (20, 300, 90, 120)])
def test_joints_come_back_where_they_were_drawn(box):
    x, y, w, h = box
    centres = {"head_top": (x + 0.5 * w, y + 10.3), "left_ankle": (x + 0.8 * w, y + h - 7.7),
               "right_wrist": (x + 5.2, y + 0.45 * h)}
    data = _blob_image(640, 480, centres)
    k = CameraIntrinsics(fx=700, fy=720, cx=330, cy=250)
    result = asyncio.run(_predict(data, PredictOptions(
        boxes=[Box(x=x, y=y, w=w, h=h)], intrinsics=k, root_depth_mm=4000)))
    (person,) = result.persons
    pose = person.pose
    pixels = dict(zip(JOINT_NAMES, pose.pixels, strict=True))
    for name, (u, v) in centres.items():
        assert tuple(pixels[name]) == pytest.approx((u, v), abs=0.75), name
    # The 3D joints project back onto the 2D joints with the request's camera.
    camera = Intrinsics(k.fx, k.fy, k.cx, k.cy)
    for camera_mm, pixel in zip(pose.camera_mm, pose.pixels, strict=True):
        assert camera.project(np.array(camera_mm)) == pytest.approx(pixel, abs=1e-6)
        # z = 0 for every joint means every joint at the root depth
        assert camera_mm[2] == pytest.approx(4000)
    assert person.crop_side == pytest.approx(1.5 * max(w, h))


def test_auto_crop_finds_the_person_again():
    centres = {"head_top": (400.0, 120.0), "left_ankle": (430.0, 400.0),
               "right_wrist": (350.0, 260.0)}
    result = asyncio.run(_predict(_blob_image(640, 480, centres), PredictOptions()))
    (person,) = result.persons
    assert person.box_source == "auto"
    pixels = dict(zip(JOINT_NAMES, person.pose.pixels, strict=True))
    for name, (u, v) in centres.items():
        assert tuple(pixels[name]) == pytest.approx((u, v), abs=1.5), name
    assert result.intrinsics_source == "default_fov"
    # Joints other than the blobs sit at the crop centre: no knee-neck length to measure, so
    # the depth falls back to the crop-size prior (a 2.55 m wide crop at the pelvis).
    assert person.pose.root_depth_source == "crop_size_prior"
    side = person.crop_side
    focal = result.intrinsics.fx * INPUT_SIZE / side
    assert person.pose.root_depth_mm == pytest.approx(2550 * focal / INPUT_SIZE)


def test_options_are_checked_against_the_image():
    data = _blob_image(64, 48, {"head_top": (10, 10)})
    with pytest.raises(InvalidRequest, match="outside the 64x48 image"):
        asyncio.run(_predict(data, PredictOptions(boxes=[Box(x=70, y=0, w=5, h=5)])))


def test_a_request_stuck_behind_a_busy_thread_pool_ends_at_its_deadline(monkeypatch):
    """Decoding waits in the default thread pool; a backlog there must not outlive deadlines."""
    import threading
    import time as _time

    from service import core
    from service.errors import DeadlineExceeded

    release = threading.Event()
    started = []
    real = core.decode_image

    def slow_decode(*args, **kwargs):
        started.append(_time.monotonic())
        release.wait(5)  # the pool's worker is busy until released
        return real(*args, **kwargs)

    monkeypatch.setattr(core, "decode_image", slow_decode)
    data = _blob_image(64, 64, {"head_top": (30, 30)})

    async def run():
        service = PoseService(Settings(max_batch_wait_ms=1, request_timeout_s=0.3), BlobBackend())
        await service.start()
        try:
            t = asyncio.get_running_loop().time()
            with pytest.raises(DeadlineExceeded, match="while decoding"):
                await service.predict(data, "image/png", PredictOptions())
            return asyncio.get_running_loop().time() - t
        finally:
            release.set()
            await service.stop()

    elapsed = asyncio.run(run())
    assert 0.25 <= elapsed < 1.0  # answered at its 0.3 s deadline, not when decoding ended
    assert len(started) == 1


def test_an_overloaded_service_refuses_before_decoding(monkeypatch):
    """Admission is checked before the decode: a refusal costs no thread-pool work."""
    from service import core
    from service.errors import DeadlineExceeded, Overloaded

    decoded = []
    real = core.decode_image

    def counting_decode(*args, **kwargs):
        decoded.append(1)
        return real(*args, **kwargs)

    class SlowBlobs(BlobBackend):
        gate: asyncio.Event | None = None

        async def infer(self, images):
            await asyncio.sleep(0.2)  # ~0.2 s per single-crop batch
            if self.gate is not None:
                await self.gate.wait()
            return await super().infer(images)

    monkeypatch.setattr(core, "decode_image", counting_decode)
    data = _blob_image(64, 64, {"head_top": (30, 15), "left_ankle": (35, 50),
                                "right_wrist": (20, 30)})
    one_box = PredictOptions(boxes=[Box(x=10, y=10, w=40, h=40)])

    async def run():
        backend = SlowBlobs()
        service = PoseService(Settings(max_batch_wait_ms=0, max_batch_size=1), backend)
        await service.start()
        try:
            await service.predict(data, "image/png", one_box)  # measures the backend
            backend.gate = asyncio.Event()
            busy = [asyncio.create_task(service.predict(data, "image/png", one_box))
                    for _ in range(4)]
            await asyncio.sleep(0.3)
            assert service.batcher.in_flight == 1 and service.batcher.queue_depth == 3
            before = len(decoded)
            # Corrupt bytes: refused as overload, so the decode (which would say 400) never ran.
            with pytest.raises(Overloaded, match="later than the request's deadline"):
                await service.predict(b"not an image", "image/png",
                                      one_box.model_copy(update={"timeout_s": 0.6}))
            # Without boxes the request makes two passes: refused where one pass would fit.
            service.batcher.admission.admit(1, asyncio.get_running_loop().time() + 1.6)
            with pytest.raises(Overloaded):
                await service.predict(data, "image/png", PredictOptions(timeout_s=1.6))
            assert len(decoded) == before
            assert service.batcher.reserved == 0  # refusals hold no reservation
            backend.gate.set()
            assert all(len(r.persons) == 1 for r in await asyncio.gather(*busy))
            # Idle again: a short deadline that fits the backend's speed is served.
            response = await service.predict(data, "image/png",
                                              one_box.model_copy(update={"timeout_s": 0.6}))
            assert len(response.persons) == 1
            with pytest.raises(DeadlineExceeded):  # too short for any load: 504, not 429
                await service.predict(data, "image/png",
                                      one_box.model_copy(update={"timeout_s": 0.05}))
            assert service.batcher.reserved == 0
        finally:
            if backend.gate is not None:
                backend.gate.set()
            await service.stop()

    asyncio.run(run())
