"""REST's JSON models of API v1 (pydantic): what /v1/predict, /v1/model and every error answer
carry, and the request's person boxes and intrinsics. The server builds its answers with them
and FastAPI documents them in the OpenAPI document, committed as poseapi/openapi.json.

The only module of poseapi that needs pydantic (the server's `serve` extra); clients read the
JSON without it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Box(BaseModel):
    """A person box in original-image pixels: top-left corner and size."""

    x: float
    y: float
    w: float
    h: float


class CameraIntrinsics(BaseModel):
    fx: float
    fy: float
    cx: float
    cy: float


class Joint(BaseModel):
    name: str
    pixel: tuple[float, float] = Field(description="(u, v) in original-image pixels")
    camera_mm: tuple[float, float, float] = Field(description="(X, Y, Z) camera space, mm")
    relative_mm: tuple[float, float, float] = Field(description="offset from the pelvis, mm")
    normalised: tuple[float, float, float] = Field(description="model output in (-1, 1)")
    uncertainty_mm: tuple[float, float, float] = Field(
        description="one standard deviation per camera axis, mm: the marginal heatmaps' "
                    "spread, widened for a joint that may be out of view (see visibility)"
    )
    visibility: float | None = Field(
        None, ge=0.0, le=1.0,
        description="probability that the joint is in view: inside the picture and not "
                    "hidden behind something (self-occlusion counts as in view); null when the "
                    "model has no visibility head (margipose-lite versions 1 to 3)",
    )


class Heatmaps(BaseModel):
    """The final-stage marginals of one person, order xy, zy, xz."""

    format: Literal["f16", "png"]
    shape: list[int] = Field(description="[3, 17, 32, 32]: plane, joint, row, column")
    dtype: str = Field(description="float16 (little-endian) or uint16 PNG tiles")
    data: str = Field(description="base64")
    scale: list[float] | None = Field(
        None, description="png only: per (plane, joint) value of the brightest pixel (65535)"
    )


class Person(BaseModel):
    box: Box = Field(description="the caller's box; for `detector`, the square whose crop "
                                 "(1.5 x its side, same centre) the detection gave")
    box_source: Literal["request", "detector", "track", "auto"] = Field(
        description="`request`: the caller's box; `detector`: found by the person detector; "
                    "`track`: gRPC video mode, around the joints of the frame before; "
                    "`auto`: a server without a detector found one person by a whole-image "
                    "pass")
    crop: dict = Field(description="crop centre (u, v) and side in original pixels: the crop "
                                   "whose model pass answered (re-framed to the whole body's "
                                   "crop for a person seen only in part)")
    root_depth_mm: float
    root_depth_source: Literal["request", "knee_neck_prior", "torso_head_prior",
                               "shoulder_head_prior", "crop_size_prior"]
    joints: list[Joint]
    heatmaps: Heatmaps | None = None
    detection_score: float | None = Field(
        None, description="box_source `detector` only: the person detector's score, 0 to 1")
    track_id: int | None = Field(
        None, description="gRPC StreamPredict only: the person's id across the stream's "
                          "frames; null in REST answers")


class ErrorDetail(BaseModel):
    code: str = Field(description="e.g. invalid_image, payload_too_large, overloaded")
    message: str = Field(description="what was wrong and what is allowed")
    retry_after: float | None = Field(None, description="seconds to wait before retrying")


class ErrorResponse(BaseModel):
    """The body of every error answer."""

    error: ErrorDetail


class PredictResponse(BaseModel):
    model: dict
    image: dict = Field(description="width and height after EXIF orientation")
    intrinsics: CameraIntrinsics
    intrinsics_source: Literal["request", "default_fov"]
    persons: list[Person]
    timings_ms: dict[str, float]
