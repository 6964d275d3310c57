"""What the core answers: typed, transport-free results holding numpy arrays.

`PoseService` returns these; REST (`service.rest_encode`) and gRPC (`service.grpc_encode`) each
build their wire format from them, and the renderer draws them. Nothing here knows JSON,
base64 or protobuf.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from poseapi.values import Box, ModelDescription, ModelInfo
from posecontract.geometry import Intrinsics
from service.postprocess import PersonPose

__all__ = ["Box", "ModelDescription", "ModelInfo", "PersonResult", "PoseResult"]


@dataclass(frozen=True, eq=False)
class PersonResult:
    """One person: the box and crop used, the pose, and the heatmaps when asked for."""

    box: Box
    box_source: str                 # "request", "detector" or "auto"
    crop_centre: tuple[float, float]  # original-image pixels
    crop_side: float                # original-image pixels
    pose: PersonPose                # (17, k) arrays in skeleton order, root depth and source
    heatmaps: np.ndarray | None = field(default=None, repr=False)
    """(3, 17, 32, 32) float32 final-stage marginals, planes xy, zy, xz."""
    detection_score: float | None = None
    """The person detector's score (0-1) when it found the person (box_source "detector")."""
    track_id: int | None = None
    """StreamPredict only: the person's id across the stream's frames (service.tracking)."""


@dataclass(frozen=True, eq=False)
class PoseResult:
    """The poses in one image."""

    model: ModelInfo
    width: int                      # the original image's, after EXIF orientation
    height: int
    intrinsics: Intrinsics
    intrinsics_source: str          # "request" or "default_fov"
    persons: list[PersonResult]
    timings_ms: dict[str, float]
    heatmap_format: str = "none"    # how the transports should carry `PersonResult.heatmaps`
