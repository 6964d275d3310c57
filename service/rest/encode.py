"""The core's typed results as REST's JSON models (poseapi.schemas): heatmaps in base64."""

from __future__ import annotations

import base64
import dataclasses

from poseapi import heatmaps as wire_heatmaps
from poseapi import schemas
from posecontract.skeleton import JOINT_NAMES
from service.results import ModelDescription, PersonResult, PoseResult


def predict_response(result: PoseResult) -> schemas.PredictResponse:
    k = result.intrinsics
    return schemas.PredictResponse(
        model=dataclasses.asdict(result.model),
        image={"width": result.width, "height": result.height},
        intrinsics=schemas.CameraIntrinsics(fx=k.fx, fy=k.fy, cx=k.cx, cy=k.cy),
        intrinsics_source=result.intrinsics_source,
        persons=[_person(p, result.heatmap_format) for p in result.persons],
        timings_ms=result.timings_ms,
    )


def _person(person: PersonResult, heatmap_format: str) -> schemas.Person:
    pose = person.pose
    joints = [
        schemas.Joint(name=name, pixel=tuple(pose.pixels[j]), camera_mm=tuple(pose.camera_mm[j]),
                      relative_mm=tuple(pose.relative_mm[j]),
                      normalised=tuple(pose.normalised[j]),
                      uncertainty_mm=tuple(pose.uncertainty_mm[j]),
                      visibility=None if pose.visibility is None else float(pose.visibility[j]))
        for j, name in enumerate(JOINT_NAMES)
    ]
    maps = None
    if person.heatmaps is not None:
        payload = wire_heatmaps.encode(person.heatmaps, heatmap_format)
        maps = schemas.Heatmaps(format=payload.format, shape=list(payload.shape),
                                dtype=payload.dtype, data=base64.b64encode(payload.data).decode(),
                                scale=None if payload.scale is None else list(payload.scale))
    b = person.box
    return schemas.Person(
        box=schemas.Box(x=b.x, y=b.y, w=b.w, h=b.h), box_source=person.box_source,
        crop={"centre": list(person.crop_centre), "side": person.crop_side},
        root_depth_mm=pose.root_depth_mm, root_depth_source=pose.root_depth_source,
        joints=joints, heatmaps=maps, detection_score=person.detection_score,
    )


def model_description(description: ModelDescription) -> dict:
    """`/v1/model`'s body."""
    return description.to_json()
