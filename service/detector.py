"""Finding people for requests without boxes: the person detector and its post-processing.

The detector is a second exported model (`model_repository/person-detector`, see
`posecontract.detection`) on a backend of its own: in-process with the pose model's runtime
(`LocalBackend`, its own inference thread) or the same Triton server's second model
(`TritonBackend`). Its own batcher groups the windows of concurrent requests (one image is the
whole picture and, when it is elongated, squares along it: three for a 16:9 frame), bounds its
queue (429 beyond) and honours deadlines, like the pose model's.

`PersonDetector.find` renders the windows, runs them and turns the outputs into people
(threshold, weighted NMS per window, letterbox removal, cross-window merge), best first, at most
`max_persons`.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from posecontract.detection import (
    DETECTOR_CONTRACT,
    DETECTOR_SERVING,
    Detection,
    detection_box,
    people_in_windows,
    window_batch,
)
from service.backends.base import Backend, ModelInfo
from service.batching import Batcher
from service.errors import DeadlineExceeded
from service.imaging import DecodedImage
from service.settings import Settings

log = logging.getLogger(__name__)


class PersonDetector:
    """The person detector over `backend` (a backend of the detector's contract)."""

    def __init__(self, backend: Backend, *, min_score: float, tiles: bool = True,
                 max_queue: int = 256, max_batch_size: int = DETECTOR_SERVING.max_batch_size,
                 max_wait_s: float = 0.002, clip_cut: bool = True):
        self.backend = backend
        self.min_score = min_score
        self.tiles = tiles
        self.clip_cut = clip_cut  # `posecontract.detection.detection_box`
        self.batcher = Batcher(backend.infer, max_batch_size=max_batch_size,
                               max_wait_s=max_wait_s, max_queue=max_queue,
                               name="detector-batcher",
                               item_dims=DETECTOR_CONTRACT.input.dims)

    async def present(self) -> bool:
        """Whether the backend has the detector at all (Triton: in its repository index; the
        local backend's repository was checked by `make_detector`)."""
        present = getattr(self.backend, "present", None)
        return True if present is None else await present()

    async def start(self) -> None:
        await self.backend.start()
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop(drain=True)
        await self.backend.stop()

    async def ready(self) -> bool:
        try:
            return await self.backend.ready()
        except Exception:  # readiness must answer, whatever the backend does
            log.exception("detector readiness check failed")
            return False

    def info(self) -> ModelInfo:
        return self.backend.info()

    def inputs(self, decoded: DecodedImage) -> tuple[list, np.ndarray]:
        """The windows of `decoded` and the detector's input for each (CPU work)."""
        return window_batch(decoded.image, decoded.width, decoded.height, decoded.scale,
                            self.tiles)

    def box(self, detection: Detection, width: int, height: int
            ) -> tuple[float, float, float, float]:
        """The box the service crops for `detection` in a `width` x `height` picture."""
        return detection_box(detection, width, height, self.clip_cut)

    async def find(self, views: list, images: np.ndarray, deadline: float, max_persons: int,
                   min_score: float | None = None) -> list[Detection]:
        """The people in the windows `views` (rendered as `images`), best first."""
        if asyncio.get_running_loop().time() >= deadline:
            raise DeadlineExceeded("The request deadline passed before person detection")
        outputs = await self.batcher.submit(images, deadline)
        score = self.min_score if min_score is None else min_score
        return people_in_windows(outputs["boxes"], outputs["scores"], views, score, max_persons)


def make_detector(settings: Settings) -> PersonDetector | None:
    """The detector the settings name, or None when it is turned off (`detector_model` empty)
    or, for the local backend, absent from the model repository (logged: the gateway then
    finds one person by a whole-image pass, as before the detector). A Triton server without
    the model is found out at start (`PersonDetector.present`), with the same outcome."""
    name = settings.detector_model
    if not name:
        return None
    if settings.backend == "triton":
        from service.backends.triton import TritonBackend

        backend: Backend = TritonBackend(settings.triton_url, name, "",
                                         settings.triton_timeout_s,
                                         start_timeout_s=settings.triton_start_timeout_s,
                                         contract=DETECTOR_CONTRACT)
    else:
        from service.backends.local import LocalBackend

        if not (settings.model_repository / name).is_dir():
            log.warning("no person detector %r in %s: requests without boxes get one person "
                        "from a whole-image pass (export it with `python -m "
                        "training.export_detector`, or set --detector-model '' to silence "
                        "this)", name, settings.model_repository)
            return None
        backend = LocalBackend(settings.model_repository, name, None, settings.device,
                               settings.torch_threads, warmup_batch_sizes=(1, 4),
                               runtime=settings.runtime, contract=DETECTOR_CONTRACT)
    return PersonDetector(backend, min_score=settings.detector_min_score,
                          tiles=settings.detector_tiles, max_queue=settings.max_queue)
