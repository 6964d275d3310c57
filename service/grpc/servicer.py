"""gRPC adapter (grpc.aio): converts pose.v1 messages to core calls and ServiceErrors to codes.

Predict and GetModel answer a failure with the error's gRPC code (`ServiceError.grpc_code`)
and message, plus trailing metadata `x-request-id` and, when set, `retry-after`. StreamPredict
answers every frame in order, a failed one with `PredictResponse.error`, and keeps going. The
same server carries grpc.health.v1 (SERVING only while the backend is ready) and reflection.
The service definition and its contract are in proto/pose/v1/pose.proto; the server that
carries it is `service.grpc.server`.

Access control is the gateway's, as REST's: metadata `authorization: Bearer <token>` on
Predict and GetModel, and once per StreamPredict call (which fails UNAUTHENTICATED without it);
rate limits count every Predict, GetModel and StreamPredict frame (a limited frame is answered
inline, RESOURCE_EXHAUSTED with retry_after). Health and reflection stay open.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet

from poseapi.grpc_gen.pose.v1 import pose_pb2, pose_pb2_grpc
from service.errors import InvalidRequest, ServiceError
from service.gateway import REPLACED_HEADER, REPLACED_NOTE
from service.gateway import request_id as call_id
from service.grpc import encode
from service.options import Box, PredictOptions, parse_options
from service.results import PoseResult
from service.tracking import (
    DEFAULT_MAX_MISSED,
    SMOOTH_BY_DEFAULT,
    Smoothing,
    Tracker,
    VideoCrops,
)

if TYPE_CHECKING:
    from service.gateway import Gateway

log = logging.getLogger(__name__)

SERVICE_NAME = pose_pb2.DESCRIPTOR.services_by_name["PoseService"].full_name  # pose.v1.PoseService
PREDICT = f"/{SERVICE_NAME}/Predict"  # metrics route labels: the full gRPC method names
STREAM_PREDICT = f"/{SERVICE_NAME}/StreamPredict"
GET_MODEL = f"/{SERVICE_NAME}/GetModel"

STREAM_WINDOW = 4  # frames of one stream in the core at once (they may share batches)

_HEATMAPS_IN = {value: name for name, value in encode.HEATMAP_FORMATS.items()}
_FIELDS = [f.name for f in pose_pb2.PredictRequest.DESCRIPTOR.fields]


@dataclass(frozen=True)
class Undecodable:
    """A request message that did not parse: the error to answer it with, not gRPC's UNKNOWN.

    Handed to the servicer in place of the message, so that Predict fails INVALID_ARGUMENT and
    StreamPredict answers that frame inline and goes on. `request_id` is empty, like an unset one.
    """

    error: InvalidRequest
    request_id: str = ""


def lenient(message_type: type[Message]) -> Callable[[bytes], Message | Undecodable]:
    """A request deserializer for `message_type` that returns Undecodable instead of raising."""
    name = message_type.DESCRIPTOR.full_name

    def parse(data: bytes) -> Message | Undecodable:
        try:
            return message_type.FromString(data)
        except DecodeError:
            return Undecodable(InvalidRequest(
                f"The request ({len(data)} bytes) is not a valid {name} protobuf message; "
                f"send a {name} serialized with the pose.v1 proto"
            ))

    return parse


def options_from_request(request: pose_pb2.PredictRequest) -> PredictOptions:
    """Build PredictOptions from a request; InvalidRequest on unknown fields or bad values."""
    # Like REST's unknown options: a field this server does not know would otherwise be ignored.
    unknown = sorted({f.field_number for f in UnknownFieldSet(request)})
    if unknown:
        raise InvalidRequest(
            f"Unknown PredictRequest fields (numbers) {unknown}; allowed: {', '.join(_FIELDS)}"
        )
    raw: dict = {
        "boxes": [{"x": b.x, "y": b.y, "w": b.w, "h": b.h} for b in request.boxes],
        # An enum value this server does not know goes through as is, and pydantic names it.
        "heatmaps": _HEATMAPS_IN.get(request.heatmaps, request.heatmaps),
    }
    if request.HasField("intrinsics"):
        k = request.intrinsics
        raw["intrinsics"] = {"fx": k.fx, "fy": k.fy, "cx": k.cx, "cy": k.cy}
    for name in ("root_depth_mm", "timeout_s"):
        if request.HasField(name):
            raw[name] = getattr(request, name)
    return parse_options(raw)


@dataclass(frozen=True)
class FrameTracking:
    """A StreamPredict frame's tracking options (PredictRequest.tracking, timestamp_s)."""

    smoothing: Smoothing
    max_missed: int
    timestamp_s: float | None
    detect_every: int = 1


class _Stream:
    """One StreamPredict call's state: its tracker, how many frames were answered (video mode
    waits on it), the video mode's crops, the last picture's size."""

    def __init__(self, tracker: Tracker):
        self.tracker = tracker
        self.answered = 0
        self.answered_changed = asyncio.Condition()
        self.crops: VideoCrops | None = None
        self.size: tuple[int, int] | None = None


MAX_MISSED_LIMIT = 1000
MAX_DETECT_EVERY = 1000


def tracking_from_request(request: pose_pb2.PredictRequest) -> FrameTracking:
    """The frame's tracking options; InvalidRequest naming a value out of range."""
    t = request.tracking
    defaults = Smoothing()
    smoothing = Smoothing(
        enabled=t.smooth if t.HasField("smooth") else SMOOTH_BY_DEFAULT,
        min_cutoff=t.min_cutoff if t.HasField("min_cutoff") else defaults.min_cutoff,
        beta=t.beta if t.HasField("beta") else defaults.beta,
        d_cutoff=t.d_cutoff if t.HasField("d_cutoff") else defaults.d_cutoff)
    try:
        smoothing.check()
    except ValueError as exc:
        raise InvalidRequest(f"tracking.{exc}") from None
    max_missed = t.max_missed if t.HasField("max_missed") else DEFAULT_MAX_MISSED
    if not 0 <= max_missed <= MAX_MISSED_LIMIT:
        raise InvalidRequest(f"tracking.max_missed must be 0 to {MAX_MISSED_LIMIT} frames, "
                             f"got {max_missed}")
    timestamp = request.timestamp_s if request.HasField("timestamp_s") else None
    if timestamp is not None and not math.isfinite(timestamp):
        raise InvalidRequest(f"timestamp_s must be a finite number of seconds, got {timestamp}")
    detect_every = t.detect_every if t.HasField("detect_every") else 1
    if not 1 <= detect_every <= MAX_DETECT_EVERY:
        raise InvalidRequest(f"tracking.detect_every must be 1 to {MAX_DETECT_EVERY} frames, "
                             f"got {detect_every}")
    return FrameTracking(smoothing, max_missed, timestamp, detect_every)


Metadata = tuple[tuple[str, str], ...]


def _id_metadata(request_id: str, replaced: bool) -> Metadata:
    """`x-request-id`, and the note saying it replaced the caller's (which broke the rule)."""
    return (("x-request-id", request_id),) + (((REPLACED_HEADER, REPLACED_NOTE),)
                                               if replaced else ())


def _trailers(exc: ServiceError, request_id: str, replaced: bool) -> Metadata:
    trailers = _id_metadata(request_id, replaced)
    if exc.retry_after is not None:  # whole seconds, as REST's Retry-After header
        trailers += (("retry-after", exc.retry_after_header()),)
    return trailers


def _metadata(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for k, value in context.invocation_metadata() or ():
        if k == key and isinstance(value, str):
            return value
    return None


def _request_id(given: str, context: grpc.aio.ServicerContext | None) -> tuple[str, bool]:
    """The request's own id, else the call's `x-request-id` metadata, else a new one; one that
    breaks the gateway's rule is replaced (`service.gateway.request_id`): (id, replaced)."""
    return call_id(given or (context and _metadata(context, "x-request-id")) or None)


def peer_host(peer: str) -> str:
    """The client address of a gRPC peer (`ipv4:1.2.3.4:5678`, `ipv6:[::1]:5678`), as REST's."""
    kind, _, address = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return address.rpartition(":")[0].strip("[]")
    return peer or "unknown"


class _Call:
    """What one call (or stream) brings with it: the client's credentials and address."""

    def __init__(self, context: grpc.aio.ServicerContext):
        self.authorization = _metadata(context, "authorization")
        self.peer = peer_host(context.peer() or "")


class PoseServicer(pose_pb2_grpc.PoseServiceServicer):
    """pose.v1.PoseService over the gateway's core: convert, delegate, convert back."""

    def __init__(self, gateway: Gateway):
        self.gateway = gateway
        self.service = gateway.service
        self.access = gateway.access

    async def Predict(self, request: pose_pb2.PredictRequest,
                      context: grpc.aio.ServicerContext) -> pose_pb2.PredictResponse:
        return await self._unary(PREDICT, request.request_id, context, lambda request_id:
                                 self._predict(request, request_id, context.time_remaining()))

    async def StreamPredict(self, requests: AsyncIterator[pose_pb2.PredictRequest],
                            context: grpc.aio.ServicerContext
                            ) -> AsyncIterator[pose_pb2.PredictResponse]:
        # Reading runs ahead of answering, so that up to STREAM_WINDOW frames are in the core
        # at once (decoding in parallel, sharing batches) while answers leave in order. A client
        # that waits for each answer before sending the next frame works too.
        call = _Call(context)
        try:  # the stream is the client's; each frame is rate-limited on its own
            self.access.auth.check(call.authorization)
        except ServiceError as exc:
            await context.abort(exc.grpc_code, exc.message)
        window = asyncio.Semaphore(STREAM_WINDOW)
        frames: asyncio.Queue[asyncio.Task | None] = asyncio.Queue()  # None: no more frames
        # The stream's people, followed from answer to answer in order (service.tracking);
        # it goes with the call: a client that leaves frees it.
        stream = _Stream(Tracker())
        tracker = stream.tracker

        async def read() -> None:
            try:
                index = 0
                async for request in requests:
                    await window.acquire()
                    frames.put_nowait(asyncio.create_task(
                        self._frame(request, call, stream, index)))
                    index += 1
            finally:
                frames.put_nowait(None)

        reader = asyncio.create_task(read())
        metrics = self.gateway.metrics
        metrics.streams.inc()
        try:
            while (frame := await frames.get()) is not None:
                answer = await frame
                window.release()
                before = len(tracker.tracks)
                response = self._track(tracker, *answer)
                metrics.tracks.inc(len(tracker.tracks) - before)
                async with stream.answered_changed:
                    stream.answered += 1
                    stream.answered_changed.notify_all()
                yield response
            await reader  # a failure to read the stream fails the call
        finally:
            metrics.tracks.dec(len(tracker.tracks))
            metrics.streams.dec()
            tracker.tracks.clear()
            reader.cancel()
            while not frames.empty():
                if (frame := frames.get_nowait()) is not None:
                    frame.cancel()

    async def GetModel(self, request: pose_pb2.GetModelRequest,
                       context: grpc.aio.ServicerContext) -> pose_pb2.ModelDescription:
        async def describe(_: str) -> pose_pb2.ModelDescription:
            if isinstance(request, Undecodable):
                raise request.error
            return encode.model_description(self.service.model_description())

        return await self._unary(GET_MODEL, "", context, describe)

    async def _unary(self, route: str, given_id: str, context: grpc.aio.ServicerContext,
                     work: Callable[[str], Awaitable[Message]]) -> Message:
        """A unary call: admitted, observed, answered by `work(request_id)`; a ServiceError ends
        it with its code, message and trailers (the request id, and retry-after if any)."""
        request_id, replaced = _request_id(given_id, context)
        call = _Call(context)
        try:
            with self._observe(route, request_id, call):
                self.access.admit(call.authorization, call.peer)
                answer = await work(request_id)
        except ServiceError as exc:
            await context.abort(exc.grpc_code, exc.message,
                                _trailers(exc, request_id, replaced))
        if replaced:
            context.set_trailing_metadata(_id_metadata(request_id, replaced))
        return answer

    async def _frame(self, request: pose_pb2.PredictRequest, call: _Call, stream: _Stream,
                     index: int) -> tuple[str, PoseResult | ServiceError, FrameTracking | None]:
        """One StreamPredict frame: its result (and how to track it), or its error."""
        request_id, _ = _request_id(request.request_id, None)
        try:
            with self._observe(STREAM_PREDICT, request_id, call):
                self.access.admit(call.authorization, call.peer)
                if isinstance(request, Undecodable):
                    raise request.error
                tracking = tracking_from_request(request)
                if tracking.detect_every == 1 or len(request.boxes):
                    return request_id, await self._result(request, None), tracking
                return request_id, await self._video_frame(request, stream, index,
                                                           tracking), tracking
        except ServiceError as exc:
            return request_id, exc, None

    async def _video_frame(self, request: pose_pb2.PredictRequest, stream: _Stream, index: int,
                           tracking: FrameTracking) -> PoseResult:
        """Video mode (`tracking.detect_every` > 1): the frame waits for the one before to be
        answered and tracked, then runs the detector or the previous poses' crops
        (`service.tracking.VideoCrops`)."""
        async with stream.answered_changed:
            await stream.answered_changed.wait_for(lambda: stream.answered >= index)
        if stream.crops is None or stream.crops.detect_every != tracking.detect_every:
            stream.crops = VideoCrops(tracking.detect_every)
        boxes = stream.crops.boxes(stream.tracker, *stream.size) if stream.size else None
        result = await self._result(request, None, boxes)
        stream.size = (result.width, result.height)
        return stream.crops.answered(result, reused=boxes is not None)

    def _track(self, tracker: Tracker, request_id: str, outcome: PoseResult | ServiceError,
               tracking: FrameTracking | None) -> pose_pb2.PredictResponse:
        """A frame's answer, in stream order: its people tracked (and smoothed), or its error."""
        if isinstance(outcome, ServiceError):
            return pose_pb2.PredictResponse(request_id=request_id, error=encode.error(outcome))
        assert tracking is not None
        tracker.max_missed = tracking.max_missed
        result = tracker.update(outcome, tracking.timestamp_s, tracking.smoothing)
        return encode.predict_response(result, request_id)

    async def _predict(self, request: pose_pb2.PredictRequest, request_id: str,
                       time_remaining: float | None) -> pose_pb2.PredictResponse:
        if isinstance(request, Undecodable):
            raise request.error
        return encode.predict_response(await self._result(request, time_remaining), request_id)

    async def _result(self, request: pose_pb2.PredictRequest, time_remaining: float | None,
                      track_boxes: list[tuple[float, float, float, float]] | None = None
                      ) -> PoseResult:
        options = options_from_request(request)
        if options.timeout_s is None and time_remaining is not None:
            # The call's gRPC deadline becomes the core's (which drops work nobody waits for).
            options = options.model_copy(update={"timeout_s": max(time_remaining, 1e-3)})
        source = "request"
        if track_boxes is not None:  # video mode: the crops of the stream's previous poses
            options = options.model_copy(update={"boxes": [
                Box(x=x, y=y, w=w, h=h) for x, y, w, h in track_boxes]})
            source = "track"
        result = await self.service.predict(request.image, request.content_type or None, options,
                                            source)
        self.gateway.observer.result(result)
        return result

    @contextmanager
    def _observe(self, route: str, request_id: str, call: _Call) -> Iterator[None]:
        """Observe a call (or frame) by its status code; unexpected failures become INTERNAL."""
        with self.gateway.observer.call(route, "grpc", "GRPC", request_id, call.peer) as seen:
            seen.status = grpc.StatusCode.OK.name
            try:
                yield
            except ServiceError as exc:
                seen.status = exc.grpc_code.name
                raise
            except asyncio.CancelledError:
                seen.status = grpc.StatusCode.CANCELLED.name
                raise
            except Exception:
                seen.status = grpc.StatusCode.INTERNAL.name
                log.exception("unhandled error on %s (request %s)", route, request_id)
                raise ServiceError("Internal error") from None


def add_servicer(servicer: PoseServicer, server: grpc.aio.Server) -> None:
    """Register pose.v1.PoseService like the generated `add_PoseServiceServicer_to_server`,
    but with `lenient` request deserializers."""
    serialize = {"response_serializer": pose_pb2.PredictResponse.SerializeToString}
    handlers = {
        "Predict": grpc.unary_unary_rpc_method_handler(
            servicer.Predict, request_deserializer=lenient(pose_pb2.PredictRequest), **serialize),
        "StreamPredict": grpc.stream_stream_rpc_method_handler(
            servicer.StreamPredict, request_deserializer=lenient(pose_pb2.PredictRequest),
            **serialize),
        "GetModel": grpc.unary_unary_rpc_method_handler(
            servicer.GetModel, request_deserializer=lenient(pose_pb2.GetModelRequest),
            response_serializer=pose_pb2.ModelDescription.SerializeToString),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
