"""The transport-free core: decode, crop, batch, infer, turn heatmaps into joints.

REST and gRPC adapters convert their inputs to `PredictOptions` + image bytes, call
`PoseService.predict`, and encode the typed `PoseResult` (service.results) in their own wire
format; errors are `ServiceError`s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from poseapi.render import Scene, ScenePerson, render_pose_png
from posecontract.detection import BOX_TO_CROP, Detection
from posecontract.framing import REFRAME_MIN_SCALE, crop_side, frame_crop, full_body_frame
from posecontract.geometry import Crop, Intrinsics, make_crop
from posecontract.layout import INPUT_SIZE
from posecontract.skeleton import JOINT_NAMES, PARENTS
from service.backends.base import Backend
from service.batching import Batcher, Reservation
from service.detector import PersonDetector
from service.errors import BackendUnavailable, DeadlineExceeded, InvalidRequest, Overloaded
from service.imaging import DecodedImage, crop_for_model, decode_image
from service.options import PredictOptions, check_options, check_timeout
from service.postprocess import SEEN, PersonPose, person_pose, seen_joints
from service.results import Box, ModelDescription, ModelInfo, PersonResult, PoseResult
from service.settings import Settings

T = TypeVar("T")

log = logging.getLogger(__name__)

# Crop side relative to the box: training framed people at 1.5x their projected joint extent.
CROP_MARGIN = BOX_TO_CROP
MIN_CROP_SIDE = 16.0  # pixels; below this the second auto-crop pass keeps the first crop
HEATMAP_KEYS = ("heatmap_xy", "heatmap_zy", "heatmap_xz")
# JPEG draft decoding keeps at least this many pixels on the image's shorter side: a person a
# third of the frame tall still gets ~256 decoded pixels for the 256-pixel crop, while a
# 12-megapixel photo decodes at a quarter of its size.
DRAFT_MIN_SIDE = 720


@dataclass
class _Pass:
    crop: Crop
    outputs: dict[str, np.ndarray]  # one row of each output


class PoseService:
    """Pose estimation over one backend, with a shared cross-request batcher, and the person
    detector (None: requests without boxes get one person from a whole-image pass)."""

    def __init__(self, settings: Settings, backend: Backend, observer=None,
                 detector: PersonDetector | None = None):
        self.settings = settings
        self.backend = backend
        self.detector = detector
        self.batcher = Batcher(
            backend.infer,
            max_batch_size=settings.max_batch_size,
            max_wait_s=settings.max_batch_wait_ms / 1000,
            max_queue=settings.max_queue,
            max_concurrent_batches=settings.max_concurrent_batches,
            on_batch=observer,
        )

    async def start(self) -> None:
        await self.backend.start()
        if self.detector is not None:
            if await self.detector.present():
                await self.detector.start()
            else:
                log.warning("the %s backend has no person detector %r: requests without boxes "
                            "get one person from a whole-image pass", self.backend.kind,
                            self.settings.detector_model)
                self.detector = None
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop(drain=True)
        if self.detector is not None:
            await self.detector.stop()
        await self.backend.stop()

    async def ready(self) -> bool:
        try:
            ready = await self.backend.ready()
        except Exception:  # readiness must answer, whatever the backend does
            log.exception("backend readiness check failed")
            return False
        return ready and (self.detector is None or await self.detector.ready())

    def model_description(self) -> ModelDescription:
        info = self.backend.info()
        detector = None
        if self.detector is not None:
            d = self.detector.info()
            detector = ModelInfo(d.name, d.version, self.backend.kind)
        return ModelDescription(name=info.name, version=info.version, backend=self.backend.kind,
                                input_size=INPUT_SIZE, joints=tuple(JOINT_NAMES),
                                parents=tuple(PARENTS), card=info.card, detector=detector)

    async def predict(self, data: bytes, content_type: str | None,
                      options: PredictOptions, box_source: str = "request") -> PoseResult:
        """Estimate the pose of each requested person (or of the people found). `box_source`
        names where `options.boxes` came from ("track": a stream's previous poses)."""
        return (await self._predict(data, content_type, options, box_source))[0]

    async def render(self, data: bytes, content_type: str | None, options: PredictOptions,
                     joint: str) -> bytes:
        """A PNG of the poses: 2D overlay, 3D view and the first person's heatmaps of `joint`."""
        if joint not in JOINT_NAMES:
            raise InvalidRequest(f"Unknown joint {joint!r}; joints are {', '.join(JOINT_NAMES)}")
        # Drawn as the wire's float16 heatmaps would be, so a client's drawing matches.
        options = options.model_copy(update={"heatmaps": "f16"})
        result, decoded = await self._predict(data, content_type, options)
        maps = None
        if result.persons:
            maps = result.persons[0].heatmaps.astype(np.float16).astype(np.float32)
        return await asyncio.to_thread(render_pose_png, decoded.image, scene(result), joint,
                                       maps)

    async def _predict(self, data: bytes, content_type: str | None, options: PredictOptions,
                       box_source: str = "request") -> tuple[PoseResult, DecodedImage]:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        timeout = self.settings.request_timeout_s
        check_timeout(options.timeout_s)
        if options.timeout_s is not None:
            timeout = min(timeout, options.timeout_s)
        deadline = loop.time() + timeout
        # Refuse work the batcher could not finish in time before paying for the decode: under
        # overload the decoding threads compete with inference, and a refusal must stay cheap.
        # Without boxes the request makes two passes of one crop each, or (with the detector)
        # one pass of a crop per person found, at least one counted. Admitted crops count as
        # coming until they are submitted, so that requests decoding side by side are not all
        # admitted against the same short queue.
        n_crops = len(options.boxes) if options.boxes else 1
        if n_crops > self.settings.max_persons:  # refused with 422 after decoding
            n_crops = 0
        reservation = self.batcher.reserve(n_crops, deadline, passes=1 if options.boxes else 2)
        try:
            return await self._serve(data, content_type, options, deadline, start, reservation,
                                     box_source)
        finally:
            reservation.release()

    async def _serve(self, data: bytes, content_type: str | None, options: PredictOptions,
                     deadline: float, start: float, reservation: Reservation,
                     box_source: str = "request") -> tuple[PoseResult, DecodedImage]:
        timings: dict[str, float] = {}

        t = time.perf_counter()
        decoded = await _in_thread(
            deadline, "decoding",
            lambda: decode_image(data, content_type=content_type,
                                 max_bytes=self.settings.max_body_bytes,
                                 max_pixels=self.settings.max_image_pixels,
                                 min_detail=DRAFT_MIN_SIDE),
        )
        timings["decode"] = _ms(t)
        check_options(options, decoded.width, decoded.height, self.settings.max_persons)
        intrinsics, k_source = self._intrinsics(options, decoded)

        if options.boxes:
            boxes = [(Box(b.x, b.y, b.w, b.h), box_source, None) for b in options.boxes]
            crops = [_crop_around(intrinsics, b, decoded) for b in options.boxes]
            passes = await self._run(decoded, crops, deadline, timings, "model", reservation)
        elif self.detector is not None:
            found = await self._detect(decoded, deadline, timings)
            boxes = [(Box(*self.detector.box(d, decoded.width, decoded.height)), "detector",
                      d.score) for d in found]
            crops = [_crop_around(intrinsics, b, decoded) for b, _, _ in boxes]
            passes = await self._run(decoded, crops, deadline, timings, "model",
                                     reservation) if crops else []
        else:
            # Pass 1: the whole image padded to a square; pass 2: around what pass 1 found.
            side = max(decoded.width, decoded.height)
            whole = make_crop(intrinsics, (decoded.width / 2, decoded.height / 2), side, INPUT_SIZE)
            first = (await self._run(decoded, [whole], deadline, timings, "model_pass1",
                                     reservation))[0]
            found = person_pose(first.outputs["coords"], first.outputs["coord_std"], first.crop,
                                visibility=first.outputs.get("visibility"))
            box = _joint_box(found.pixels, found.visibility)
            crop = _crop_around(intrinsics, box, decoded) if max(box.w, box.h) * CROP_MARGIN \
                >= MIN_CROP_SIDE else whole
            passes = await self._run(decoded, [crop], deadline, timings, "model_pass2")
            boxes = [(box, "auto", None)]
        passes = await self._reframe(decoded, intrinsics, passes, deadline, timings)

        t = time.perf_counter()
        persons = [
            self._person(p, box, source, score, options)
            for p, (box, source, score) in zip(passes, boxes, strict=True)
        ]
        timings["postprocess"] = _ms(t)
        timings["total"] = _ms(start)
        info = self.backend.info()
        result = PoseResult(
            model=ModelInfo(info.name, info.version, self.backend.kind),
            width=decoded.width, height=decoded.height,
            intrinsics=intrinsics, intrinsics_source=k_source,
            persons=persons, timings_ms=timings, heatmap_format=options.heatmaps,
        )
        return result, decoded

    def _intrinsics(self, options: PredictOptions, decoded: DecodedImage
                    ) -> tuple[Intrinsics, str]:
        k = options.intrinsics
        if k is not None:
            return Intrinsics(k.fx, k.fy, k.cx, k.cy), "request"
        fov = self.settings.default_fov_degrees
        return Intrinsics.from_fov(decoded.width, decoded.height, fov), "default_fov"

    async def _detect(self, decoded: DecodedImage, deadline: float, timings: dict[str, float]
                      ) -> list[Detection]:
        """The people the detector finds in `decoded`, best first, at most `max_persons`."""
        assert self.detector is not None
        detector = self.detector
        t = time.perf_counter()
        views, images = await _in_thread(deadline, "preparing detection",
                                         lambda: detector.inputs(decoded))
        timings["crop_detect"] = _ms(t)
        t = time.perf_counter()
        found = await detector.find(views, images, deadline, self.settings.max_persons)
        timings["detect"] = _ms(t)
        return found

    async def _run(self, decoded: DecodedImage, crops: list[Crop], deadline: float,
                   timings: dict[str, float], label: str,
                   reservation: Reservation | None = None) -> list[_Pass]:
        t = time.perf_counter()
        images = await _in_thread(
            deadline, "cropping",
            lambda: np.stack([crop_for_model(decoded, c).transpose(2, 0, 1) for c in crops]),
        )
        timings[f"crop_{label}"] = _ms(t)
        if asyncio.get_running_loop().time() >= deadline:
            raise DeadlineExceeded("The request deadline passed before inference")
        t = time.perf_counter()
        if reservation is not None:
            reservation.release()  # the crops are about to be queued, where they count
        outputs = await self.batcher.submit(images, deadline)
        timings[label] = _ms(t)
        return [_Pass(c, {k: v[i] for k, v in outputs.items()}) for i, c in enumerate(crops)]

    async def _reframe(self, decoded: DecodedImage, intrinsics: Intrinsics, passes: list[_Pass],
                       deadline: float, timings: dict[str, float]) -> list[_Pass]:
        """One more pass for each person the model saw only in part, on the crop where its
        training would have framed the whole body (`posecontract.framing`): a box around a
        head and shoulders shows them two to three times larger than the model learnt them.
        Only models with the visibility head say what is seen; the others keep their pass."""
        if not self.settings.reframe_partial:
            return passes
        wanted: dict[int, Crop] = {}
        for i, p in enumerate(passes):
            visibility = p.outputs.get("visibility")
            if visibility is None:
                continue
            frame = full_body_frame(p.outputs["coords"], visibility, SEEN)
            if frame is None or frame.scale < REFRAME_MIN_SCALE:
                continue
            wanted[i] = frame_crop(p.crop, frame, intrinsics)
        if not wanted:
            return passes
        try:
            again = await self._run(decoded, list(wanted.values()), deadline, timings,
                                    "model_reframe")
        except Overloaded:
            # The first pass is an answer: under load it stands rather than failing the request.
            log.warning("re-framing skipped for %d person(s): the backend queue is full",
                        len(wanted))
            timings.pop("crop_model_reframe", None)
            return passes
        out = list(passes)
        for i, p in zip(wanted, again, strict=True):
            out[i] = p
        return out

    def _person(self, p: _Pass, box: Box, source: str, score: float | None,
                options: PredictOptions) -> PersonResult:
        pose: PersonPose = person_pose(p.outputs["coords"], p.outputs["coord_std"], p.crop,
                                       options.root_depth_mm, p.outputs.get("visibility"))
        centre = np.linalg.inv(p.crop.pixel_matrix) @ np.array([INPUT_SIZE / 2, INPUT_SIZE / 2, 1])
        side = crop_side(p.crop)
        heatmaps = None
        if options.heatmaps != "none":
            if any(k not in p.outputs for k in HEATMAP_KEYS):
                raise BackendUnavailable("The backend did not return heatmaps")
            heatmaps = np.stack([p.outputs[k] for k in HEATMAP_KEYS]).astype(np.float32)
        return PersonResult(box=box, box_source=source,
                            crop_centre=(float(centre[0]), float(centre[1])),
                            crop_side=float(side), pose=pose, heatmaps=heatmaps,
                            detection_score=score)


async def _in_thread(deadline: float, step: str, work: Callable[[], T]) -> T:
    """Run `work` in the default thread pool, but give up at `deadline` (the loop's clock).

    Under overload the pool's queue is where requests wait before the batcher's own bounded
    queue sees them; without a deadline here they would wait there for as long as it takes, and
    answer long after their caller gave up. Giving up cancels the work if it has not started.
    """
    remaining = deadline - asyncio.get_running_loop().time()
    if remaining <= 0:
        raise DeadlineExceeded(f"The request deadline passed before {step}")
    try:
        return await asyncio.wait_for(asyncio.to_thread(work), timeout=remaining)
    except TimeoutError:
        raise DeadlineExceeded(f"The request deadline passed while {step} "
                               "(the service is overloaded)") from None


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 3)


def _crop_around(intrinsics: Intrinsics, box: Box, decoded: DecodedImage) -> Crop:
    """The model's crop for a person box: centred on it, side CROP_MARGIN x its longer side."""
    side = max(CROP_MARGIN * max(box.w, box.h), 1.0)
    return make_crop(intrinsics, (box.x + box.w / 2, box.y + box.h / 2), side, INPUT_SIZE)


def _joint_box(pixels: np.ndarray, visibility: np.ndarray | None = None) -> Box:
    """The tight box around 2D joints (17, 2): the seen ones (`seen_joints`)."""
    pixels = seen_joints(pixels, visibility)
    lo, hi = pixels.min(axis=0), pixels.max(axis=0)
    return Box(x=float(lo[0]), y=float(lo[1]), w=float(hi[0] - lo[0]), h=float(hi[1] - lo[1]))


def scene(result: PoseResult) -> Scene:
    """What the renderer draws of a result."""
    return Scene(result.width, result.height, [
        ScenePerson((p.box.x, p.box.y, p.box.w, p.box.h), p.pose.pixels, p.pose.relative_mm,
                    p.pose.normalised, p.pose.visibility, p.detection_score)
        for p in result.persons
    ])
