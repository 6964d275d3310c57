"""gRPC clients (pose.v1.PoseService over the committed stubs), sync and async.

Predict and GetModel have a deadline (`timeout`, default the client's) that bounds all their
attempts and waits; it travels as the gRPC deadline, which the service adopts as the request's.
RESOURCE_EXHAUSTED with a `retry-after` (queue full, rate limited) and UNAVAILABLE (model not
ready) are retried as `RetryPolicy` says. StreamPredict answers every frame in order; a failed
frame comes back as a `FrameError` and the stream goes on. Each frame carries the client's
timeout as its own deadline; the stream as a whole has none unless `timeout` is given.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format

from poseapi.grpc_gen.pose.v1 import pose_pb2, pose_pb2_grpc
from poseclient.errors import ApiError, CallTimeout, PoseClientError, Unreachable
from poseclient.options import ImageInput, Options, make_options, read_image
from poseclient.results import FrameError, ModelDescription, PredictResult
from poseclient.retry import DEFAULT_RETRY, Deadline, RetryPolicy, parse_retry_after
from poseclient.video import Frame
from posecontract.geometry import Intrinsics

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT_S = 30.0
# Heatmaps of many people fit; gRPC's default of 4 MiB might not.
CHANNEL_OPTIONS = (("grpc.max_receive_message_length", 64 * 1024 * 1024),)
_HEATMAPS = {"none": pose_pb2.HEATMAP_FORMAT_NONE, "f16": pose_pb2.HEATMAP_FORMAT_F16,
             "png": pose_pb2.HEATMAP_FORMAT_PNG}
Boxes = list[list[float]] | list[tuple[float, float, float, float]] | None
Frames = Iterable[ImageInput]


def request_message(image: bytes, options: Options, timeout_s: float | None = None,
                    content_type: str | None = None) -> pose_pb2.PredictRequest:
    """A PredictRequest for `image` with `options` (and a server-side deadline)."""
    m = pose_pb2.PredictRequest(image=image, content_type=content_type or "",
                                heatmaps=_HEATMAPS[options.heatmaps])
    m.boxes.extend(pose_pb2.Box(x=x, y=y, w=w, h=h) for x, y, w, h in options.boxes)
    if options.intrinsics is not None:
        k = options.intrinsics
        m.intrinsics.CopyFrom(pose_pb2.CameraIntrinsics(fx=k.fx, fy=k.fy, cx=k.cx, cy=k.cy))
    if options.root_depth_mm is not None:
        m.root_depth_mm = options.root_depth_mm
    if timeout_s is not None:
        m.timeout_s = max(timeout_s, 1e-3)
    return m


@dataclass(frozen=True)
class Tracking:
    """StreamPredict's tracking options (pose.v1 Tracking); None leaves the server's default
    (no smoothing; when smoothing, One Euro min_cutoff 0.1 Hz, beta 40, d_cutoff 1 Hz;
    max_missed 10)."""

    smooth: bool | None = None
    min_cutoff: float | None = None
    beta: float | None = None
    d_cutoff: float | None = None
    max_missed: int | None = None
    detect_every: int | None = None  # video mode: the detector every N frames (server: 1)

    def message(self) -> pose_pb2.Tracking:
        m = pose_pb2.Tracking()
        for name in ("smooth", "min_cutoff", "beta", "d_cutoff", "max_missed", "detect_every"):
            value = getattr(self, name)
            if value is not None:
                setattr(m, name, value)
        return m


def _stream_request(frame: ImageInput | Frame, options: Options, timeout_s: float | None,
                    tracking: Tracking | None) -> pose_pb2.PredictRequest:
    """A StreamPredict request: a `Frame` brings its time (the smoothing's clock)."""
    if isinstance(frame, Frame):
        m = request_message(frame.jpeg, options, timeout_s)
        if frame.time_s is not None:
            m.timestamp_s = frame.time_s
    else:
        m = request_message(read_image(frame), options, timeout_s)
    if tracking is not None:
        m.tracking.CopyFrom(tracking.message())
    return m


def response_json(m: pose_pb2.PredictResponse) -> dict[str, Any]:
    """The REST API's JSON body for a PredictResponse (heatmap bytes base64-encoded)."""
    k = m.intrinsics
    return {
        "model": {"name": m.model.name, "version": m.model.version, "backend": m.model.backend},
        "image": {"width": m.image.width, "height": m.image.height},
        "intrinsics": {"fx": k.fx, "fy": k.fy, "cx": k.cx, "cy": k.cy},
        "intrinsics_source": m.intrinsics_source,
        "persons": [_person_json(p) for p in m.persons],
        "timings_ms": dict(m.timings_ms),
    }


def _person_json(p: pose_pb2.Person) -> dict[str, Any]:
    def v3(v: pose_pb2.Vec3) -> list[float]:
        return [v.x, v.y, v.z]

    heatmaps = None
    if p.HasField("heatmaps"):
        h = p.heatmaps
        fmt = {v: k for k, v in _HEATMAPS.items()}[h.format]
        heatmaps = {"format": fmt, "shape": list(h.shape), "dtype": h.dtype,
                    "data": base64.b64encode(h.data).decode(),
                    "scale": list(h.scale) if fmt == "png" else None}
    return {
        "box": {"x": p.box.x, "y": p.box.y, "w": p.box.w, "h": p.box.h},
        "box_source": p.box_source,
        "crop": {"centre": [p.crop.centre.x, p.crop.centre.y], "side": p.crop.side},
        "root_depth_mm": p.root_depth_mm,
        "root_depth_source": p.root_depth_source,
        "joints": [{"name": j.name, "pixel": [j.pixel.x, j.pixel.y], "camera_mm": v3(j.camera_mm),
                    "relative_mm": v3(j.relative_mm), "normalised": v3(j.normalised),
                    "uncertainty_mm": v3(j.uncertainty_mm),
                    "visibility": j.visibility if j.HasField("visibility") else None}
                   for j in p.joints],
        "heatmaps": heatmaps,
        "detection_score": p.detection_score if p.HasField("detection_score") else None,
        "track_id": p.track_id if p.HasField("track_id") else None,
    }


def model_json(m: pose_pb2.ModelDescription) -> dict[str, Any]:
    """The REST API's GET /v1/model body for a ModelDescription."""
    return {"name": m.name, "version": m.version, "backend": m.backend,
            "input_size": m.input_size, "joints": list(m.joints), "parents": list(m.parents),
            "card": _integral(json_format.MessageToDict(m.card)),
            "detector": {"name": m.detector.name, "version": m.detector.version,
                         "backend": m.detector.backend} if m.HasField("detector") else None}


def _integral(value: Any) -> Any:
    """Whole floats back to ints: a protobuf Struct keeps every JSON number as a double."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def _frame(m: pose_pb2.PredictResponse) -> PredictResult | FrameError:
    if m.HasField("error"):
        e = m.error
        return FrameError(e.code, e.message,
                          e.retry_after if e.HasField("retry_after") else None, m.request_id)
    return PredictResult.from_json(response_json(m), m.request_id)


def _failure(exc: grpc.RpcError, where: str, deadline: Deadline | None) -> PoseClientError:
    """The client error for a failed call: the service's answer, or no answer at all."""
    code: grpc.StatusCode = exc.code()
    details: str = exc.details() or code.name
    trailers = dict(exc.trailing_metadata() or ())
    request_id = trailers.get("x-request-id")
    # The service's own answers carry a request id; these two without one are the transport's.
    if request_id is None and code == grpc.StatusCode.UNAVAILABLE:
        return Unreachable(where, details)
    if request_id is None and code == grpc.StatusCode.DEADLINE_EXCEEDED and deadline:
        return CallTimeout(where, deadline.timeout_s)
    return ApiError(where, details, code=code.name, request_id=request_id,
                    retry_after=parse_retry_after(trailers.get("retry-after")))


class _Base:
    """What the sync and async clients share: settings, metadata, retry decisions."""

    def __init__(self, target: str, token: str | None, timeout: float, retry: RetryPolicy):
        Deadline(timeout)  # checks it
        self.target, self.timeout, self.retry = target, timeout, retry
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def _where(self, method: str) -> str:
        return f"{self.target} {method}"

    def _deadline(self, timeout: float | None) -> Deadline:
        return Deadline(self.timeout if timeout is None else timeout)

    def _wait(self, exc: grpc.RpcError, method: str, attempt: int, deadline: Deadline) -> float:
        """Seconds to wait before trying again after a failure; raise its error otherwise."""
        error = _failure(exc, self._where(method), deadline)
        wait = (self.retry.wait_s(attempt, error, deadline.remaining())
                if isinstance(error, ApiError) else None)
        if wait is None:
            raise error from None
        return wait

    @staticmethod
    def _options(boxes: Boxes, intrinsics: Intrinsics | tuple[float, ...] | None,
                 root_depth_mm: float | None, heatmaps: bool | str) -> Options:
        return make_options(boxes, intrinsics, root_depth_mm, heatmaps)


class GrpcClient(_Base):
    """A blocking client of pose.v1.PoseService; use as a context manager or call `close()`.

        with GrpcClient("127.0.0.1:50051") as client:
            for result in client.stream(frames):  # bytes of encoded images
                ...
    """

    def __init__(self, target: str = DEFAULT_TARGET, *, token: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S, retry: RetryPolicy = DEFAULT_RETRY,
                 credentials: grpc.ChannelCredentials | None = None):
        super().__init__(target, token, timeout, retry)
        self._channel = (grpc.secure_channel(target, credentials, CHANNEL_OPTIONS) if credentials
                         else grpc.insecure_channel(target, CHANNEL_OPTIONS))
        self._stub = pose_pb2_grpc.PoseServiceStub(self._channel)

    def predict(self, image: ImageInput, *, boxes: Boxes = None,
                intrinsics: Intrinsics | tuple[float, ...] | None = None,
                root_depth_mm: float | None = None, heatmaps: bool | str = False,
                content_type: str | None = None, timeout: float | None = None) -> PredictResult:
        """Predict: the poses in `image` (bytes or a path)."""
        request = request_message(read_image(image), self._options(
            boxes, intrinsics, root_depth_mm, heatmaps), content_type=content_type)
        m = self._call(self._stub.Predict, "Predict", request, timeout)
        return PredictResult.from_json(response_json(m), m.request_id)

    def model(self, *, timeout: float | None = None) -> ModelDescription:
        """GetModel: the served model's skeleton, input size, name, version and card."""
        m = self._call(self._stub.GetModel, "GetModel", pose_pb2.GetModelRequest(), timeout)
        return ModelDescription.from_json(model_json(m))

    def stream(self, frames: Frames, *, boxes: Boxes = None,
               intrinsics: Intrinsics | tuple[float, ...] | None = None,
               root_depth_mm: float | None = None, heatmaps: bool | str = False,
               timeout: float | None = None, tracking: Tracking | None = None
               ) -> Iterator[PredictResult | FrameError]:
        """StreamPredict: one result (or FrameError) per frame, in order, as they come; each
        person carries a `track_id` that follows them across the frames.

        `frames` (bytes, paths, or `poseclient.video.Frame`s, which bring their time) is read
        lazily, as the stream needs them. Each frame's own deadline is the client's timeout;
        `timeout` bounds the whole stream (None: unbounded). `tracking` sets the smoothing.
        """
        options = self._options(boxes, intrinsics, root_depth_mm, heatmaps)
        requests = (_stream_request(f, options, self.timeout, tracking) for f in frames)
        deadline = None if timeout is None else Deadline(timeout)
        call = self._stub.StreamPredict(requests, metadata=self.metadata, timeout=timeout)
        try:
            for m in call:
                yield _frame(m)
        except grpc.RpcError as exc:
            raise _failure(exc, self._where("StreamPredict"), deadline) from None
        finally:
            call.cancel()  # a consumer that stops early ends the stream

    def _call(self, method: Any, name: str, request: Any, timeout: float | None) -> Any:
        deadline = self._deadline(timeout)
        attempt = 1
        while True:
            try:
                return method(request, timeout=deadline.remaining(), metadata=self.metadata)
            except grpc.RpcError as exc:
                time.sleep(self._wait(exc, name, attempt, deadline))
            attempt += 1

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncGrpcClient(_Base):
    """The grpc.aio twin of GrpcClient; create it inside a running event loop."""

    def __init__(self, target: str = DEFAULT_TARGET, *, token: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S, retry: RetryPolicy = DEFAULT_RETRY,
                 credentials: grpc.ChannelCredentials | None = None):
        super().__init__(target, token, timeout, retry)
        self._channel = (grpc.aio.secure_channel(target, credentials, CHANNEL_OPTIONS)
                         if credentials else grpc.aio.insecure_channel(target, CHANNEL_OPTIONS))
        self._stub = pose_pb2_grpc.PoseServiceStub(self._channel)

    async def predict(self, image: ImageInput, *, boxes: Boxes = None,
                      intrinsics: Intrinsics | tuple[float, ...] | None = None,
                      root_depth_mm: float | None = None, heatmaps: bool | str = False,
                      content_type: str | None = None, timeout: float | None = None
                      ) -> PredictResult:
        """Predict: the poses in `image` (bytes or a path)."""
        request = request_message(read_image(image), self._options(
            boxes, intrinsics, root_depth_mm, heatmaps), content_type=content_type)
        m = await self._call(self._stub.Predict, "Predict", request, timeout)
        return PredictResult.from_json(response_json(m), m.request_id)

    async def model(self, *, timeout: float | None = None) -> ModelDescription:
        """GetModel: the served model's skeleton, input size, name, version and card."""
        m = await self._call(self._stub.GetModel, "GetModel", pose_pb2.GetModelRequest(),
                             timeout)
        return ModelDescription.from_json(model_json(m))

    async def stream(self, frames: Frames | AsyncIterable[ImageInput], *, boxes: Boxes = None,
                     intrinsics: Intrinsics | tuple[float, ...] | None = None,
                     root_depth_mm: float | None = None, heatmaps: bool | str = False,
                     timeout: float | None = None, tracking: Tracking | None = None
                     ) -> AsyncIterator[PredictResult | FrameError]:
        """StreamPredict: one result (or FrameError) per frame, in order, as they come (see
        `GrpcClient.stream`)."""
        options = self._options(boxes, intrinsics, root_depth_mm, heatmaps)

        async def requests() -> AsyncIterator[pose_pb2.PredictRequest]:
            if isinstance(frames, AsyncIterable):
                async for f in frames:
                    yield _stream_request(f, options, self.timeout, tracking)
            else:
                for f in frames:
                    yield _stream_request(f, options, self.timeout, tracking)

        deadline = None if timeout is None else Deadline(timeout)
        call = self._stub.StreamPredict(requests(), metadata=self.metadata, timeout=timeout)
        try:
            async for m in call:
                yield _frame(m)
        except grpc.RpcError as exc:
            raise _failure(exc, self._where("StreamPredict"), deadline) from None
        finally:
            call.cancel()

    async def _call(self, method: Any, name: str, request: Any, timeout: float | None) -> Any:
        deadline = self._deadline(timeout)
        attempt = 1
        while True:
            try:
                return await method(request, timeout=deadline.remaining(),
                                    metadata=self.metadata)
            except grpc.RpcError as exc:
                await asyncio.sleep(self._wait(exc, name, attempt, deadline))
            attempt += 1

    async def aclose(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncGrpcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
