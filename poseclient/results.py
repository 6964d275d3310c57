"""Typed results: poses by joint name, numpy arrays on request, heatmaps as numpy.

Both transports build them from the REST API's JSON body (the gRPC client converts its
messages to that shape first), so `PredictResult.to_json()` is the REST response either way.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from poseapi import heatmaps as wire_heatmaps
from poseapi.values import SEEN_VISIBILITY, Box, ModelDescription, ModelInfo
from posecontract.geometry import Intrinsics

JointField = Literal["pixel", "camera_mm", "relative_mm", "normalised", "uncertainty_mm"]
__all__ = ["PLANES", "Box", "FrameError", "Joint", "JointField", "ModelDescription", "ModelInfo",
           "Person", "PredictResult", "decode_heatmaps"]

PLANES = ("xy", "zy", "xz")  # heatmap order: rows of the PNG mosaic, first axis of the array


@dataclass(frozen=True)
class Joint:
    """One joint of one person: image pixels, camera and root-relative millimetres."""

    name: str
    pixel: tuple[float, float]
    camera_mm: tuple[float, float, float]
    relative_mm: tuple[float, float, float]
    normalised: tuple[float, float, float]
    uncertainty_mm: tuple[float, float, float]
    """One standard deviation per camera axis (X, Y, Z): the marginal heatmaps' spread, widened
    for a joint that may be out of view."""
    visibility: float | None = None
    """Probability that the joint is in view (inside the picture, not hidden behind something);
    None from a model without a visibility head."""

    @property
    def seen(self) -> bool:
        """In view by the service's own rule (visibility >= SEEN_VISIBILITY, 0.5); True when the
        model does not say."""
        return self.visibility is None or self.visibility >= SEEN_VISIBILITY


@dataclass(frozen=True)
class Person:
    """One person: the box and crop used, the root depth, the joints in skeleton order, and
    the detector's score when the person detector found them (box_source "detector")."""

    box: Box
    box_source: str
    crop_centre: tuple[float, float]
    crop_side: float
    root_depth_mm: float
    root_depth_source: str
    joints: dict[str, Joint]
    heatmaps: np.ndarray | None = field(default=None, repr=False, compare=False)
    detection_score: float | None = None
    track_id: int | None = None  # StreamPredict: the person's id across the stream's frames
    """(3, 17, 32, 32) float32 marginals, planes xy, zy, xz; set when heatmaps were asked for."""

    def as_array(self, what: JointField = "camera_mm") -> np.ndarray:
        """One field of every joint as float64, (17, 2) for `pixel`, (17, 3) otherwise."""
        if what not in Joint.__dataclass_fields__ or what in ("name", "visibility"):
            raise ValueError(f"Unknown joint field {what!r}; fields are pixel, camera_mm, "
                             "relative_mm, normalised, uncertainty_mm (visibility: "
                             "Person.visibility())")
        return np.array([getattr(j, what) for j in self.joints.values()], dtype=np.float64)

    def visibility(self) -> np.ndarray | None:
        """Every joint's in-view probability (17,) float64; None from a model without a
        visibility head."""
        values = [j.visibility for j in self.joints.values()]
        if any(v is None for v in values):
            return None
        return np.array(values, dtype=np.float64)

    def heatmap(self, joint: str) -> np.ndarray:
        """The (3, 32, 32) marginals of one joint (xy, zy, xz)."""
        if self.heatmaps is None:
            raise ValueError("No heatmaps in this result; ask for them with heatmaps=True")
        if joint not in self.joints:
            raise ValueError(f"Unknown joint {joint!r}; joints are {', '.join(self.joints)}")
        return self.heatmaps[:, list(self.joints).index(joint)]


@dataclass(frozen=True)
class PredictResult:
    """The poses in one image, with the camera and timings the service used."""

    model: ModelInfo
    width: int
    height: int
    intrinsics: Intrinsics
    intrinsics_source: str
    persons: list[Person]
    timings_ms: dict[str, float]
    request_id: str | None = None
    body: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The REST API's response body for this result."""
        return self.body

    @classmethod
    def from_json(cls, body: dict[str, Any], request_id: str | None = None) -> PredictResult:
        """Parse the REST API's response body."""
        k = body["intrinsics"]
        return cls(
            model=ModelInfo(**body["model"]),
            width=int(body["image"]["width"]), height=int(body["image"]["height"]),
            intrinsics=Intrinsics(k["fx"], k["fy"], k["cx"], k["cy"]),
            intrinsics_source=body["intrinsics_source"],
            persons=[_person(p) for p in body["persons"]],
            timings_ms=dict(body["timings_ms"]), request_id=request_id, body=body,
        )


@dataclass(frozen=True)
class FrameError:
    """A frame of a stream that failed; the stream went on."""

    code: str
    message: str
    retry_after: float | None = None
    request_id: str | None = None


def _person(p: dict[str, Any]) -> Person:
    joints = {
        j["name"]: Joint(j["name"], tuple(j["pixel"]), tuple(j["camera_mm"]),
                         tuple(j["relative_mm"]), tuple(j["normalised"]),
                         tuple(j["uncertainty_mm"]), j.get("visibility"))
        for j in p["joints"]
    }
    return Person(
        box=Box(**p["box"]), box_source=p["box_source"],
        crop_centre=tuple(p["crop"]["centre"]), crop_side=float(p["crop"]["side"]),
        root_depth_mm=float(p["root_depth_mm"]), root_depth_source=p["root_depth_source"],
        joints=joints,
        heatmaps=None if p.get("heatmaps") is None else decode_heatmaps(p["heatmaps"]),
        detection_score=p.get("detection_score"), track_id=p.get("track_id"),
    )


def decode_heatmaps(h: dict[str, Any]) -> np.ndarray:
    """Decode the API's heatmaps (f16 or png) to float32 of their `shape` (3, 17, 32, 32)."""
    return wire_heatmaps.decode(h["format"], h["shape"], base64.b64decode(h["data"]),
                                h.get("scale"))
