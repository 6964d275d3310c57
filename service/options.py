"""The options of a predict request, as the core takes them, and their checks.

REST (query or form fields) and gRPC (PredictRequest fields) each turn their input into
`PredictOptions`; what is wrong becomes InvalidRequest naming the option and what is allowed.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from poseapi.schemas import Box, CameraIntrinsics
from service.errors import InvalidRequest

HeatmapFormat = Literal["none", "f16", "png"]

__all__ = ["Box", "CameraIntrinsics", "HeatmapFormat", "PredictOptions", "check_options",
           "check_timeout", "parse_options"]


class PredictOptions(BaseModel):
    """What a predict request may ask for besides the image."""

    model_config = ConfigDict(extra="forbid")

    boxes: list[Box] = Field(default_factory=list)
    intrinsics: CameraIntrinsics | None = None
    root_depth_mm: float | None = None
    heatmaps: HeatmapFormat = "none"
    timeout_s: float | None = None


def parse_options(raw: dict) -> PredictOptions:
    """Validate raw option values into PredictOptions; InvalidRequest names the first problem."""
    try:
        return PredictOptions.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidRequest(f"Invalid option {where}: {first['msg']}") from None


def check_options(options: PredictOptions, width: int, height: int, max_persons: int) -> None:
    """Validate options against the decoded image; raise InvalidRequest naming the problem."""
    if len(options.boxes) > max_persons:
        raise InvalidRequest(f"Too many boxes: {len(options.boxes)}; at most {max_persons} allowed")
    for i, b in enumerate(options.boxes):
        values = (b.x, b.y, b.w, b.h)
        if not all(math.isfinite(v) for v in values):
            raise InvalidRequest(f"Box {i} {list(values)} has a non-finite value")
        if b.w <= 0 or b.h <= 0:
            raise InvalidRequest(f"Box {i} has size {b.w} x {b.h}; width and height must be > 0")
        if b.x >= width or b.y >= height or b.x + b.w <= 0 or b.y + b.h <= 0:
            raise InvalidRequest(
                f"Box {i} [{b.x}, {b.y}, {b.w}, {b.h}] lies outside the {width}x{height} image"
            )
    k = options.intrinsics
    if k is not None:
        if not all(math.isfinite(v) for v in (k.fx, k.fy, k.cx, k.cy)):
            raise InvalidRequest("Intrinsics must be finite numbers")
        if k.fx <= 0 or k.fy <= 0:
            raise InvalidRequest(f"Focal lengths must be > 0 pixels, got fx={k.fx}, fy={k.fy}")
    d = options.root_depth_mm
    if d is not None and not (math.isfinite(d) and 100.0 <= d <= 100_000.0):
        raise InvalidRequest(f"root_depth_mm must be in [100, 100000] mm, got {d}")
    check_timeout(options.timeout_s)


def check_timeout(t: float | None) -> None:
    """A request's own timeout must be a positive number of seconds (checked before the
    deadline is computed from it)."""
    if t is not None and not (math.isfinite(t) and t > 0):
        raise InvalidRequest(f"timeout_s must be a positive number of seconds, got {t}")


