"""The core's typed results as pose.v1 messages: heatmaps as the bytes themselves."""

from __future__ import annotations

from google.protobuf import struct_pb2

from poseapi import heatmaps as wire_heatmaps
from poseapi.grpc_gen.pose.v1 import pose_pb2
from posecontract.skeleton import JOINT_NAMES
from service.errors import ServiceError
from service.results import ModelDescription, PersonResult, PoseResult

HEATMAP_FORMATS = {
    "none": pose_pb2.HEATMAP_FORMAT_NONE,
    "f16": pose_pb2.HEATMAP_FORMAT_F16,
    "png": pose_pb2.HEATMAP_FORMAT_PNG,
}


def predict_response(result: PoseResult, request_id: str) -> pose_pb2.PredictResponse:
    k = result.intrinsics
    return pose_pb2.PredictResponse(
        model=pose_pb2.ModelInfo(name=result.model.name, version=result.model.version,
                                 backend=result.model.backend),
        image=pose_pb2.ImageSize(width=result.width, height=result.height),
        intrinsics=pose_pb2.CameraIntrinsics(fx=k.fx, fy=k.fy, cx=k.cx, cy=k.cy),
        intrinsics_source=result.intrinsics_source,
        persons=[_person(p, result.heatmap_format) for p in result.persons],
        timings_ms=result.timings_ms,
        request_id=request_id,
    )


def _person(person: PersonResult, heatmap_format: str) -> pose_pb2.Person:
    b, pose = person.box, person.pose
    message = pose_pb2.Person(
        box=pose_pb2.Box(x=b.x, y=b.y, w=b.w, h=b.h),
        box_source=person.box_source,
        crop=pose_pb2.Crop(centre=_vec2(person.crop_centre), side=person.crop_side),
        root_depth_mm=pose.root_depth_mm,
        root_depth_source=pose.root_depth_source,
        joints=[
            pose_pb2.Joint(name=name, pixel=_vec2(pose.pixels[j]),
                           camera_mm=_vec3(pose.camera_mm[j]),
                           relative_mm=_vec3(pose.relative_mm[j]),
                           normalised=_vec3(pose.normalised[j]),
                           uncertainty_mm=_vec3(pose.uncertainty_mm[j]),
                           visibility=None if pose.visibility is None
                           else float(pose.visibility[j]))
            for j, name in enumerate(JOINT_NAMES)
        ],
    )
    if person.detection_score is not None:
        message.detection_score = person.detection_score
    if person.track_id is not None:
        message.track_id = person.track_id
    if person.heatmaps is not None:
        payload = wire_heatmaps.encode(person.heatmaps, heatmap_format)
        message.heatmaps.CopyFrom(pose_pb2.Heatmaps(
            format=HEATMAP_FORMATS[payload.format], shape=payload.shape, dtype=payload.dtype,
            data=payload.data, scale=payload.scale or [],
        ))
    return message


def _vec2(v) -> pose_pb2.Vec2:
    return pose_pb2.Vec2(x=float(v[0]), y=float(v[1]))


def _vec3(v) -> pose_pb2.Vec3:
    return pose_pb2.Vec3(x=float(v[0]), y=float(v[1]), z=float(v[2]))


def model_description(description: ModelDescription) -> pose_pb2.ModelDescription:
    card = struct_pb2.Struct()
    card.update(description.card)
    d = description.detector
    return pose_pb2.ModelDescription(
        name=description.name, version=description.version, backend=description.backend,
        input_size=description.input_size, joints=description.joints,
        parents=description.parents, card=card,
        detector=None if d is None else pose_pb2.ModelInfo(name=d.name, version=d.version,
                                                           backend=d.backend),
    )


def error(exc: ServiceError) -> pose_pb2.Error:
    """The inline error of a failed StreamPredict frame."""
    message = pose_pb2.Error(code=exc.code, message=exc.message)
    if exc.retry_after is not None:
        message.retry_after = exc.retry_after
    return message
