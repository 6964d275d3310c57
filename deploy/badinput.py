"""Bad input: a corpus of malformed requests, each with the error it must get, and a runner.

    python -m bench.badinput --rest http://127.0.0.1:8080 --grpc 127.0.0.1:50051
    python -m bench.badinput --rest URL --grpc HOST:PORT --max-body-bytes 2000000 \
        --max-image-pixels 4000000 --max-persons 4 --body-timeout-s 5

Each `Case` is data: a name, the transport, how to build the request from the gateway's
`Limits`, and what must come back (HTTP status and error code, or gRPC status code; a piece of
the message). `run_corpus` sends every case to a running gateway, one after the other, and checks
each answer; the slow uploads (only when `Limits.body_timeout_s` is given: each takes that long)
run side by side while a good request is timed. Then it checks that the gateway is still healthy:
`/health/ready` 200 and gRPC health SERVING, a good request still succeeds on both transports,
`margipose_in_flight_requests` is back to 0 and no 5xx or INTERNAL/UNKNOWN was recorded. Give
the limits the deployment runs with (the defaults are Settings' defaults). The CLI prints one
row per check and exits 1 when any failed.

The expected answers are the documented ones (README "REST API v1" and "gRPC API v1",
proto/pose/v1/pose.proto): 413 too many bytes or pixels, 415 not an accepted image type, 422
corrupt image or bad options, 408 a body that does not arrive in time; gRPC INVALID_ARGUMENT for
415/422 and undecodable messages, RESOURCE_EXHAUSTED for 413; a bad StreamPredict frame is
answered inline and the stream goes on.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import re
import select
import socket
import ssl
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import grpc
import httpx
import numpy as np
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from poseapi.grpc_gen.pose.v1 import pose_pb2
from service.grpc import MESSAGE_OVERHEAD_BYTES
from service.settings import Settings

PREDICT = "/pose.v1.PoseService/Predict"
STREAM_PREDICT = "/pose.v1.PoseService/StreamPredict"
GET_MODEL = "/pose.v1.PoseService/GetModel"
TIMEOUT_S = 60.0  # per request; the gateway answers every case long before
HOST = "gateway.invalid"  # in RawHttp heads; send_raw puts the URL's host there


def _default(name: str):
    """Settings' default for the field `name`."""
    return Settings.model_fields[name].default


@dataclass(frozen=True)
class Limits:
    """The limits of the gateway under test (Settings of the same names)."""

    max_body_bytes: int = _default("max_body_bytes")
    max_image_pixels: int = _default("max_image_pixels")
    max_persons: int = _default("max_persons")
    body_timeout_s: float | None = None  # None: skip the slow uploads (each takes this long)

    @classmethod
    def of(cls, settings: Settings, slow: bool = True) -> Limits:
        """The limits of `settings`; `slow` includes the slow uploads."""
        return cls(settings.max_body_bytes, settings.max_image_pixels, settings.max_persons,
                   settings.body_timeout_s if slow else None)


# --- requests: what a case sends -------------------------------------------------------------


@dataclass(frozen=True)
class Http:
    """An HTTP request through httpx: a raw body (`chunked`: without Content-Length) or a form."""

    path: str = "/v1/predict"
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()
    params: tuple[tuple[str, str], ...] = ()
    files: tuple[tuple[str, tuple[str, bytes, str]], ...] = ()
    data: tuple[tuple[str, str], ...] = ()
    chunked: bool = False


@dataclass(frozen=True)
class RawHttp:
    """Bytes written straight to a socket, `parts` with `interval_s` between them (slow uploads)."""

    parts: tuple[bytes, ...]
    interval_s: float = 0.0
    closes: bool = False  # the server must close the connection after answering


@dataclass(frozen=True)
class GrpcUnary:
    """A unary call whose request is raw bytes (a serialized message, or not)."""

    method: str
    payload: bytes


@dataclass(frozen=True)
class GrpcStream:
    """A StreamPredict call: frames (raw bytes) and the error code each must get ("" = none)."""

    frames: tuple[tuple[bytes, str], ...]


Request = Http | RawHttp | GrpcUnary | GrpcStream


@dataclass(frozen=True)
class Case:
    """One malformed request and the answer it must get.

    `status` is the HTTP status (REST) or the gRPC status code name; `code` the error's code in
    the REST body or a StreamPredict frame ("" for gRPC unary calls); `message` a piece of the
    error message. `slow` cases take about `Limits.body_timeout_s`.
    """

    name: str
    transport: str  # rest | grpc
    build: Callable[[Inputs], Request]
    status: int | str
    code: str
    message: str
    slow: bool = False


@dataclass
class Result:
    """The outcome of one case or health check."""

    name: str
    transport: str
    expected: str
    got: str
    ok: bool
    seconds: float


# --- inputs: images and helpers the cases are built from -------------------------------------


def good_jpeg(width: int = 320, height: int = 240, seed: int = 0) -> bytes:
    """A smooth random colour picture as JPEG."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(width: int, height: int, rows: bytes = b"") -> bytes:
    """A PNG (8-bit grey) whose header declares width x height, with `rows` as its pixel data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(rows)) + _png_chunk(b"IEND", b""))


def gif_declaring(width: int, height: int) -> bytes:
    """A GIF whose screen and first image declare width x height, with one byte of pixels."""
    return (b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
            + b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
            + b"\x02\x02\x44\x01\x00\x3b")


def multipart(parts: Sequence[tuple[str, str | None, str | None, bytes]], boundary: str = "b0und"
              ) -> bytes:
    """A multipart/form-data body: (name, filename, content type, bytes) per part."""
    out = b""
    for name, filename, content_type, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if content_type:
            out += f"Content-Type: {content_type}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


class Inputs:
    """What the cases are built from: the limits and a few real images."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.jpeg = good_jpeg()
        buf = io.BytesIO()
        Image.open(io.BytesIO(self.jpeg)).save(buf, format="PNG")
        self.png = buf.getvalue()
        self.noise = np.random.default_rng(0).bytes(4096)  # no image signature at its start

    def raw(self, body: bytes | None = None, content_type: str = "image/jpeg", **params: str
            ) -> Http:
        """POST /v1/predict with a raw body (the good JPEG by default) and query options."""
        return Http(body=self.jpeg if body is None else body,
                    headers=(("Content-Type", content_type),), params=tuple(params.items()))

    def boxes(self, boxes: object) -> Http:
        return self.raw(boxes=boxes if isinstance(boxes, str) else json.dumps(boxes))

    def intrinsics(self, fx: str, fy: str, cx: str, cy: str) -> Http:
        return self.raw(fx=fx, fy=fy, cx=cx, cy=cy)

    def form(self, *parts: tuple[str, tuple[str, bytes, str]], **data: str) -> Http:
        return Http(files=parts, data=tuple(data.items()))

    def over_max_pixels(self) -> bytes:
        """A valid all-black PNG with a few more pixels than max_image_pixels."""
        side = math.isqrt(self.limits.max_image_pixels) + 1
        return png_declaring(side, side, b"\0" * (side + 1) * side)

    def headers_only(self, length: int | str, content_type: str = "image/jpeg") -> bytes:
        """A request head for POST /v1/predict (`send_raw` fills in the host and any prefix)."""
        return (f"POST /v1/predict HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {length}\r\n\r\n").encode()

    def message(self, image: bytes | None = None, **fields: object) -> bytes:
        """A serialized PredictRequest (the good JPEG by default)."""
        fields.setdefault("content_type", "image/jpeg")
        request = pose_pb2.PredictRequest(image=self.jpeg if image is None else image, **fields)
        return request.SerializeToString()

    def predict(self, image: bytes | None = None, **fields: object) -> GrpcUnary:
        return GrpcUnary(PREDICT, self.message(image, **fields))


def _box(x: float, y: float, w: float, h: float) -> pose_pb2.Box:
    return pose_pb2.Box(x=x, y=y, w=w, h=h)


# --- the corpus ----------------------------------------------------------------------------

BAD, BIG = "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"
GOOD_BOX = _box(100, 50, 80, 120)  # a person box inside the 320x240 picture: one model pass
_ACCEPTED = "image/jpeg, image/png"
_NAN = float("nan")


def _rest(name: str, build: Callable[[Inputs], Request], status: int, code: str, message: str,
          slow: bool = False) -> Case:
    return Case(name, "rest", build, status, code, message, slow)


def _grpc(name: str, build: Callable[[Inputs], Request], status: str, message: str,
          code: str = "") -> Case:
    return Case(name, "grpc", build, status, code, message)


CORPUS: tuple[Case, ...] = (
    # Bodies that are not (whole) images.
    _rest("zero-byte body", lambda i: i.raw(b""), 422, "invalid_image", "empty (0 bytes)"),
    _rest("truncated JPEG", lambda i: i.raw(i.jpeg[: len(i.jpeg) // 2]), 422, "invalid_image",
          "JPEG image is corrupt or truncated"),
    _rest("truncated PNG", lambda i: i.raw(i.png[: len(i.png) // 2], "image/png"), 422,
          "invalid_image", "PNG image is corrupt or truncated"),
    _rest("JPEG header, then random bytes", lambda i: i.raw(i.jpeg[:200] + i.noise), 422,
          "invalid_image", "JPEG image is corrupt or truncated"),
    _rest("JPEG scan data replaced by random bytes",
          lambda i: i.raw(i.jpeg[: i.jpeg.index(b"\xff\xda") + 14] + i.noise), 422,
          "invalid_image", "JPEG image is corrupt or truncated"),
    _rest("PNG signature, then random bytes", lambda i: i.raw(i.png[:8] + i.noise, "image/png"),
          422, "invalid_image", "PNG image is corrupt or truncated"),
    _rest("random bytes", lambda i: i.raw(i.noise), 415, "unsupported_media_type",
          "is not an image in a format we decode"),
    # Declared content types we do not take.
    _rest("text/plain", lambda i: i.raw(b"hello", "text/plain"), 415, "unsupported_media_type",
          f"'text/plain' is not supported; send one of {_ACCEPTED}"),
    _rest("application/json with a JPEG body", lambda i: i.raw(content_type="application/json"),
          415, "unsupported_media_type", "'application/json' is not supported"),
    _rest("video/mp4", lambda i: i.raw(content_type="video/mp4"), 415, "unsupported_media_type",
          "'video/mp4' is not supported"),
    _rest("urlencoded form", lambda i: Http(data=(("image", "x"),)), 415,
          "unsupported_media_type", "multipart/form-data (field `image`)"),
    _rest("multipart image part typed text/plain",
          lambda i: i.form(("image", ("p.jpg", i.jpeg, "text/plain"))), 415,
          "unsupported_media_type", "'text/plain' is not supported"),
    # Too many pixels, too many bytes.
    _rest("PNG bomb: header says 30000x30000", lambda i: i.raw(png_declaring(30000, 30000),
          "image/png"), 413, "image_too_large", "too many pixels"),
    _rest("GIF bomb: header says 30000x30000", lambda i: i.raw(gif_declaring(30000, 30000),
          "image/gif"), 413, "image_too_large", "too many pixels"),
    _rest("PNG over max_image_pixels", lambda i: i.raw(i.over_max_pixels(), "image/png"), 413,
          "image_too_large", "pixels; the limit is"),
    _rest("Content-Length over max_body_bytes (headers only)",
          lambda i: RawHttp((i.headers_only(i.limits.max_body_bytes + 1),)), 413,
          "payload_too_large", "exceeds the"),
    _rest("chunked body over max_body_bytes",
          lambda i: Http(body=b"\0" * (i.limits.max_body_bytes + 1), chunked=True,
                         headers=(("Content-Type", "image/jpeg"),)),
          413, "payload_too_large", "exceeds the"),
    _rest("multipart over max_body_bytes",
          lambda i: i.form(("image", ("p.jpg", b"\0" * i.limits.max_body_bytes, "image/jpeg"))),
          413, "payload_too_large", "exceeds the"),
    # Multipart shapes.
    _rest("multipart without an image part",
          lambda i: i.form(("photo", ("p.jpg", i.jpeg, "image/jpeg"))), 422, "invalid_request",
          "need one `image` file field; got 0"),
    _rest("multipart with two images",
          lambda i: i.form(("image", ("a.jpg", i.jpeg, "image/jpeg")),
                           ("image", ("b.jpg", i.jpeg, "image/jpeg"))),
          422, "invalid_request", "need one `image` file field; got 2"),
    _rest("multipart image as a text field",
          lambda i: Http(body=multipart([("image", None, None, b"hello")]),
                         headers=(("Content-Type", "multipart/form-data; boundary=b0und"),)),
          422, "invalid_request", "need one `image` file field; got 1 `image` fields, 0 of"),
    _rest("multipart with a second file (unknown option)",
          lambda i: i.form(("image", ("p.jpg", i.jpeg, "image/jpeg")),
                           ("mask", ("m.png", i.png, "image/png"))),
          422, "invalid_request", "Unknown options ['mask']"),
    _rest("multipart with options in the query",
          lambda i: Http(files=(("image", ("p.jpg", i.jpeg, "image/jpeg")),),
                         params=(("boxes", "[[10, 10, 50, 50]]"),)),
          422, "invalid_request", "give options as form fields, not in the query; got query "
          "parameters ['boxes']"),
    _rest("multipart without a boundary",
          lambda i: Http(body=multipart([("image", "p.jpg", "image/jpeg", i.jpeg)]),
                         headers=(("Content-Type", "multipart/form-data"),)),
          422, "invalid_request", "Malformed multipart/form-data body: Missing boundary"),
    _rest("multipart with the wrong boundary",
          lambda i: Http(body=multipart([("image", "p.jpg", "image/jpeg", i.jpeg)]),
                         headers=(("Content-Type", "multipart/form-data; boundary=other"),)),
          422, "invalid_request", "Malformed multipart/form-data body"),
    _rest("multipart part without a name",
          lambda i: Http(body=multipart([("image", "p.jpg", "image/jpeg", i.jpeg)]).replace(
              b' name="image";', b""),
              headers=(("Content-Type", "multipart/form-data; boundary=b0und"),)),
          422, "invalid_request", 'Content-Disposition header field "name" must be provided'),
    _rest("multipart option field over 1 MiB",
          lambda i: i.form(("image", ("p.jpg", i.jpeg, "image/jpeg")), boxes="[" * 1_100_000),
          422, "invalid_request", "Part exceeded maximum size of 1024KB"),
    # Boxes.
    _rest("box of negative size", lambda i: i.boxes([[10, 10, -5, 50]]), 422, "invalid_request",
          "width and height must be > 0"),
    _rest("box with NaN", lambda i: i.boxes("[[NaN, 10, 50, 50]]"), 422, "invalid_request",
          "non-finite"),
    _rest("box with Infinity", lambda i: i.boxes("[[10, 10, Infinity, 50]]"), 422,
          "invalid_request", "non-finite"),
    _rest("box with 1e400", lambda i: i.boxes("[[10, 10, 1e400, 50]]"), 422, "invalid_request",
          "non-finite"),
    _rest("box outside the image", lambda i: i.boxes([[400, 10, 50, 50]]), 422,
          "invalid_request", "lies outside the 320x240 image"),
    _rest("box of three numbers", lambda i: i.boxes([[1, 2, 3]]), 422, "invalid_request",
          "list of [x, y, w, h]"),
    _rest("boxes not a list", lambda i: i.boxes({"x": 1}), 422, "invalid_request",
          "list of [x, y, w, h]"),
    _rest("box with a string", lambda i: i.boxes([["a", 1, 2, 3]]), 422, "invalid_request",
          "Invalid option boxes.0.x"),
    _rest("boxes not JSON", lambda i: i.boxes("nonsense"), 422, "invalid_request",
          "boxes must be JSON"),
    _rest("boxes nested 2000 deep", lambda i: i.boxes("[" * 2000 + "]" * 2000), 422,
          "invalid_request", "boxes must be JSON"),
    _rest("box with a 5000-digit number", lambda i: i.boxes(f"[[{'9' * 5000}, 1, 2, 3]]"), 422,
          "invalid_request", "boxes must be JSON"),
    _rest("more boxes than max_persons",
          lambda i: i.boxes([[10, 10, 5, 5]] * (i.limits.max_persons + 1)), 422,
          "invalid_request", "at most"),
    # Intrinsics and other options.
    _rest("negative focal length", lambda i: i.intrinsics("-500", "500", "160", "120"), 422,
          "invalid_request", "Focal lengths must be > 0 pixels, got fx=-500.0"),
    _rest("intrinsics, fx only", lambda i: i.raw(fx="500"), 422, "invalid_request",
          "Give all of fx, fy, cx, cy or none of them; got only ['fx']"),
    _rest("intrinsics with NaN", lambda i: i.intrinsics("500", "nan", "160", "120"), 422,
          "invalid_request", "Intrinsics must be finite numbers"),
    _rest("intrinsics not a number", lambda i: i.intrinsics("500", "500", "middle", "120"), 422,
          "invalid_request", "Invalid option intrinsics.cx"),
    _rest("root_depth_mm negative", lambda i: i.raw(root_depth_mm="-5"), 422, "invalid_request",
          "root_depth_mm must be in [100, 100000] mm, got -5"),
    _rest("root_depth_mm not a number", lambda i: i.raw(root_depth_mm="far"), 422,
          "invalid_request", "Invalid option root_depth_mm"),
    _rest("timeout_s zero", lambda i: i.raw(timeout_s="0"), 422, "invalid_request",
          "timeout_s must be a positive number of seconds, got 0"),
    _rest("timeout_s NaN", lambda i: i.raw(timeout_s="nan"), 422, "invalid_request",
          "timeout_s must be a positive number of seconds, got nan"),
    _rest("heatmaps jpeg", lambda i: i.raw(heatmaps="jpeg"), 422, "invalid_request",
          "Invalid option heatmaps: Input should be 'none', 'f16' or 'png'"),
    _rest("unknown option", lambda i: i.raw(colour="red"), 422, "invalid_request",
          "Unknown options ['colour']; allowed: boxes"),
    _rest("option given twice",
          lambda i: Http(body=i.jpeg, headers=(("Content-Type", "image/jpeg"),),
                         params=(("heatmaps", "f16"), ("heatmaps", "png"))),
          422, "invalid_request", "Option 'heatmaps' is given more than once"),
    _rest("render: unknown joint", lambda i: Http(path="/v1/render", body=i.jpeg, headers=(
          ("Content-Type", "image/jpeg"),), params=(("joint", "tail"),)), 422,
          "invalid_request", "Unknown joint 'tail'"),
    # Slow uploads: 408 within body_timeout_s, and the connection closed.
    _rest("slow-loris upload (4 bytes/s)",
          lambda i: RawHttp((i.headers_only(len(i.jpeg)),)
                            + tuple(i.jpeg[k:k + 1] for k in range(64)), 0.25, closes=True),
          408, "request_timeout", "did not arrive within", slow=True),
    _rest("body shorter than its Content-Length",
          lambda i: RawHttp((i.headers_only(len(i.jpeg)) + i.jpeg[:100],), closes=True),
          408, "request_timeout", "100 bytes received, Content-Length", slow=True),
    _rest("slow multipart upload",
          lambda i: RawHttp((i.headers_only(10_000, "multipart/form-data; boundary=b0und"),)
                            + (b"--b0und\r\n",) * 64, 0.25, closes=True),
          408, "request_timeout", "did not arrive within", slow=True),
    # gRPC.
    _grpc("garbage bytes as PredictRequest", lambda i: GrpcUnary(PREDICT, b"\xff" * 16), BAD,
          "is not a valid pose.v1.PredictRequest protobuf message"),
    _grpc("random bytes as PredictRequest", lambda i: GrpcUnary(PREDICT, i.noise), BAD,
          "is not a valid pose.v1.PredictRequest protobuf message"),
    _grpc("invalid UTF-8 in content_type", lambda i: GrpcUnary(PREDICT, b"\x12\x02\xff\xfe"),
          BAD, "is not a valid pose.v1.PredictRequest protobuf message"),
    _grpc("length prefix past the end", lambda i: GrpcUnary(PREDICT, b"\x0a\x80\x80\x04abc"),
          BAD, "is not a valid pose.v1.PredictRequest protobuf message"),
    _grpc("unknown field 99", lambda i: GrpcUnary(PREDICT, i.message() + b"\x98\x06\x01"), BAD,
          "Unknown PredictRequest fields (numbers) [99]"),
    _grpc("garbage bytes as GetModelRequest", lambda i: GrpcUnary(GET_MODEL, b"\xff" * 16), BAD,
          "is not a valid pose.v1.GetModelRequest protobuf message"),
    _grpc("empty image", lambda i: i.predict(b""), BAD, "empty (0 bytes)"),
    _grpc("truncated JPEG", lambda i: i.predict(i.jpeg[: len(i.jpeg) // 2]), BAD,
          "JPEG image is corrupt or truncated"),
    _grpc("random bytes as the image", lambda i: i.predict(i.noise, content_type=""), BAD,
          "is not an image in a format we decode"),
    _grpc("content_type video/mp4", lambda i: i.predict(content_type="video/mp4"), BAD,
          "'video/mp4' is not supported"),
    _grpc("box of negative size", lambda i: i.predict(boxes=[_box(10, 10, -5, 50)]), BAD,
          "width and height must be > 0"),
    _grpc("box with NaN", lambda i: i.predict(boxes=[_box(_NAN, 10, 50, 50)]), BAD,
          "non-finite"),
    _grpc("box outside the image", lambda i: i.predict(boxes=[_box(10, 400, 50, 50)]), BAD,
          "lies outside the 320x240 image"),
    _grpc("more boxes than max_persons",
          lambda i: i.predict(boxes=[_box(10, 10, 5, 5)] * (i.limits.max_persons + 1)), BAD,
          "at most"),
    _grpc("negative focal length", lambda i: i.predict(
          intrinsics=pose_pb2.CameraIntrinsics(fx=-1, fy=500, cx=160, cy=120)), BAD,
          "Focal lengths must be > 0 pixels"),
    _grpc("intrinsics with NaN", lambda i: i.predict(
          intrinsics=pose_pb2.CameraIntrinsics(fx=500, fy=500, cx=_NAN, cy=120)), BAD,
          "Intrinsics must be finite numbers"),
    _grpc("root_depth_mm negative", lambda i: i.predict(root_depth_mm=-5), BAD,
          "root_depth_mm must be in [100, 100000] mm"),
    _grpc("timeout_s negative", lambda i: i.predict(timeout_s=-1), BAD,
          "timeout_s must be a positive number of seconds"),
    _grpc("heatmaps enum 7", lambda i: i.predict(heatmaps=7), BAD, "Invalid option heatmaps"),
    _grpc("PNG bomb: header says 30000x30000",
          lambda i: i.predict(png_declaring(30000, 30000), content_type="image/png"), BIG,
          "too many pixels"),
    _grpc("image over max_body_bytes", lambda i: i.predict(b"\0" * (i.limits.max_body_bytes + 1)),
          BIG, "the limit is"),
    _grpc("message over the gRPC size limit", lambda i: i.predict(
          b"\0" * (i.limits.max_body_bytes + MESSAGE_OVERHEAD_BYTES + 1)), BIG,
          "larger than max"),
    _grpc("StreamPredict: bad frames among good ones", lambda i: GrpcStream((
          (i.message(boxes=[GOOD_BOX], request_id="good-1"), ""),
          (b"\xff" * 16, "invalid_request"),
          (i.message(i.jpeg[:300], request_id="truncated"), "invalid_image"),
          (i.message(boxes=[_box(10, 10, 0, 50)], request_id="bad-box"), "invalid_request"),
          (i.message(b"", request_id="empty"), "invalid_image"),
          (i.message(boxes=[GOOD_BOX], request_id="good-2"), ""))), "OK",
          "is not a valid pose.v1.PredictRequest protobuf message"),
)


# --- sending and checking ------------------------------------------------------------------


def send_raw(base_url: str, request: RawHttp, timeout_s: float = TIMEOUT_S
             ) -> tuple[int, dict[str, str], bytes, bool]:
    """Write `request` to the server of `base_url` (http or https) and read the answer: status,
    headers, body, and whether the server closed the connection after it.

    The head's host and path become the URL's. Sending stops as soon as the server answers
    (writing on would only earn a reset).
    """
    url = urlsplit(base_url)
    host, https = url.hostname or "127.0.0.1", url.scheme == "https"
    head = request.parts[0].replace(f"Host: {HOST}".encode(), f"Host: {url.netloc}".encode(), 1)
    head = head.replace(b" /v1/", f" {url.path.rstrip('/')}/v1/".encode(), 1)
    parts = (head, *request.parts[1:])
    with socket.create_connection((host, url.port or (443 if https else 80)), timeout_s) as raw:
        sock = (ssl.create_default_context().wrap_socket(raw, server_hostname=host) if https
                else raw)
        for k, part in enumerate(parts):
            answered, _, _ = select.select([sock], [], [], request.interval_s if k else 0)
            if answered:
                break
            try:
                sock.sendall(part)
            except OSError:  # the server answered and closed while we were still sending
                break
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"no HTTP answer; got {data[:200]!r}")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", 0))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        closed = False
        if request.closes:
            sock.settimeout(5)
            try:
                closed = sock.recv(1) == b""
            except ConnectionResetError:  # closed while our last bytes were on their way
                closed = True
            except TimeoutError:
                closed = False
        return status, headers, body[:length], closed


def _request_id(frame: bytes) -> str:
    """The request_id of a serialized PredictRequest; "" when unset or undecodable."""
    try:
        return pose_pb2.PredictRequest.FromString(frame).request_id
    except DecodeError:
        return ""


def _describe(status: int | str, code: str, message: str) -> str:
    return " ".join(str(p) for p in (status, code, repr(message) if message else "") if p)


class Runner:
    """Sends cases to one gateway and checks the answers."""

    def __init__(self, rest_url: str, grpc_target: str | None, limits: Limits,
                 token: str | None = None):
        self.rest_url = rest_url.rstrip("/")
        self.grpc_target = grpc_target
        self.inputs = Inputs(limits)
        auth = (("authorization", f"Bearer {token}"),) if token else ()
        self.http = httpx.Client(base_url=self.rest_url, timeout=TIMEOUT_S, headers=dict(auth))
        self.metadata = auth
        self.channel = None
        if grpc_target:
            limit = limits.max_body_bytes + 2 * MESSAGE_OVERHEAD_BYTES + 1024
            self.channel = grpc.insecure_channel(grpc_target, options=[
                ("grpc.max_send_message_length", limit)])

    def close(self) -> None:
        self.http.close()
        if self.channel is not None:
            self.channel.close()

    def run(self, case: Case) -> Result:
        """Send one case and compare its answer with the expected one."""
        start = time.perf_counter()
        request = case.build(self.inputs)
        try:
            got, ok = self._send(request, case)
        except Exception as exc:  # a crash, a hang or a refused connection is a finding
            got, ok = f"{type(exc).__name__}: {exc}", False
        return Result(case.name, case.transport, _describe(case.status, case.code, case.message),
                      got, ok, time.perf_counter() - start)

    def _send(self, request: Request, case: Case) -> tuple[str, bool]:
        if isinstance(request, Http):
            return self._check_rest(*self._http(request), case)
        if isinstance(request, RawHttp):
            status, headers, body, closed = send_raw(self.rest_url, request)
            got, ok = self._check_rest(status, body, case)
            if request.closes:
                got += "; connection closed" if closed else "; connection left open"
                ok = ok and closed
            return got, ok
        if isinstance(request, GrpcUnary):
            return self._unary(request, case)
        return self._stream(request, case)

    def _http(self, request: Http) -> tuple[int, bytes]:
        content: bytes | Iterator[bytes] | None = request.body
        if request.chunked and request.body is not None:
            body = request.body
            content = (body[k:k + 65536] for k in range(0, len(body), 65536))
        r = self.http.post(request.path, content=content, headers=dict(request.headers),
                           params=list(request.params), files=list(request.files) or None,
                           data=dict(request.data) or None)
        return r.status_code, r.content

    @staticmethod
    def _check_rest(status: int, body: bytes, case: Case) -> tuple[str, bool]:
        try:
            error = json.loads(body)["error"]
            code, message = error["code"], error["message"]
        except (ValueError, KeyError, TypeError):
            return f"{status} (not our error body: {body[:120]!r})", False
        got = f"{status} {code}: {message}"
        return got, status == case.status and code == case.code and case.message in message

    def _unary(self, request: GrpcUnary, case: Case) -> tuple[str, bool]:
        call = self.channel.unary_unary(request.method, request_serializer=None,
                                        response_deserializer=None)
        try:
            call(request.payload, timeout=TIMEOUT_S, metadata=self.metadata)
        except grpc.RpcError as exc:
            code, details = exc.code().name, exc.details() or ""
            return f"{code}: {details}", code == case.status and case.message in details
        return "OK", case.status == "OK"

    def _stream(self, request: GrpcStream, case: Case) -> tuple[str, bool]:
        call = self.channel.stream_stream(STREAM_PREDICT, request_serializer=None,
                                          response_deserializer=pose_pb2.PredictResponse.FromString)
        frames = [payload for payload, _ in request.frames]
        try:
            answers = list(call(iter(frames), timeout=TIMEOUT_S, metadata=self.metadata))
        except grpc.RpcError as exc:
            return f"stream failed {exc.code().name}: {exc.details()}", False
        codes = [a.error.code if a.HasField("error") else "" for a in answers]
        expected = [code for _, code in request.frames]
        # Each answer echoes its frame's request_id (one made up for a frame that did not parse).
        ids_ok = len(answers) == len(frames) and all(
            a.request_id and a.request_id == (_request_id(f) or a.request_id)
            for a, f in zip(answers, frames, strict=False))
        results_ok = all(a.persons for a, code in zip(answers, codes, strict=False) if not code)
        messages = " | ".join(a.error.message for a in answers if a.HasField("error"))
        got = f"OK, frames: {', '.join(c or 'ok' for c in codes)}"
        ok = (codes == expected and ids_ok and results_ok and case.message in messages)
        return got, ok

    # --- health after the corpus -------------------------------------------------------------

    def good_rest(self) -> tuple[int, float]:
        start = time.perf_counter()
        r = self.http.post("/v1/predict", content=self.inputs.jpeg,
                           headers={"Content-Type": "image/jpeg"},
                           params={"boxes": "[[100, 50, 80, 120]]"})  # GOOD_BOX
        return r.status_code, time.perf_counter() - start

    def health(self, baseline_errors: float) -> list[Result]:
        """The checks that the gateway is still well after the corpus."""
        results = []

        def check(name: str, transport: str, expected: str, probe: Callable[[], tuple[str, bool]]
                  ) -> None:
            start = time.perf_counter()
            try:
                got, ok = probe()
            except Exception as exc:
                got, ok = f"{type(exc).__name__}: {exc}", False
            results.append(Result(name, transport, expected, got, ok,
                                  time.perf_counter() - start))

        def ready() -> tuple[str, bool]:
            r = self.http.get("/health/ready")
            return str(r.status_code), r.status_code == 200

        def good() -> tuple[str, bool]:
            status, _ = self.good_rest()
            return str(status), status == 200

        check("health: /health/ready", "health", "200", ready)
        check("health: a good REST predict", "health", "200", good)
        if self.channel is not None:
            def grpc_health() -> tuple[str, bool]:
                stub = health_pb2_grpc.HealthStub(self.channel)
                r = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
                name = health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
                return name, name == "SERVING"

            def grpc_good() -> tuple[str, bool]:
                call = self.channel.unary_unary(
                    PREDICT, request_serializer=None,
                    response_deserializer=pose_pb2.PredictResponse.FromString)
                r = call(self.inputs.message(boxes=[GOOD_BOX]), timeout=TIMEOUT_S,
                         metadata=self.metadata)
                return f"OK, {len(r.persons)} person", len(r.persons) == 1

            check("health: grpc.health.v1 Check", "health", "SERVING", grpc_health)
            check("health: a good gRPC Predict", "health", "OK, 1 person", grpc_good)

        def idle() -> tuple[str, bool]:
            deadline = time.monotonic() + 10  # cancelled work may take a moment to unwind
            while True:
                value = self.samples().get("margipose_in_flight_requests", math.nan)
                if value == 0 or time.monotonic() > deadline:
                    return f"{value:g}", value == 0
                time.sleep(0.1)

        def no_server_errors() -> tuple[str, bool]:
            errors = self.server_errors() - baseline_errors
            return f"{errors:g}", errors == 0

        check("health: margipose_in_flight_requests", "health", "0", idle)
        check("health: new 5xx / INTERNAL / UNKNOWN", "health", "0", no_server_errors)
        return results

    def samples(self) -> dict[str, float]:
        """Unlabelled samples of /metrics, and labelled ones under their full text."""
        text = self.http.get("/metrics").text
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def server_errors(self) -> float:
        """Requests answered 5xx (REST) or INTERNAL/UNKNOWN (gRPC) so far."""
        pattern = re.compile(r'^margipose_requests_total\{.*status="(5\d\d|INTERNAL|UNKNOWN)"')
        return sum(v for k, v in self.samples().items() if pattern.match(k))


def run_corpus(rest_url: str, grpc_target: str | None, limits: Limits = Limits(),
               cases: Sequence[Case] = CORPUS, token: str | None = None) -> list[Result]:
    """Send every case to the gateway and check it, then check the gateway's health.

    gRPC cases run only with a `grpc_target`; slow cases only with `limits.body_timeout_s`,
    side by side, while a good request is timed (it must not wait for them). The health checks
    come last, as results named `health: ...`.
    """
    runner = Runner(rest_url, grpc_target, limits, token)
    try:
        chosen = [c for c in cases if (c.transport == "rest" or grpc_target)
                  and (not c.slow or limits.body_timeout_s is not None)]
        baseline_errors = runner.server_errors()
        runner.good_rest()  # warm, so the timing during the slow uploads compares fairly
        _, baseline_s = runner.good_rest()
        results = [runner.run(c) for c in chosen if not c.slow]
        slow = [c for c in chosen if c.slow]
        if slow:
            results += _run_side_by_side(runner, slow, baseline_s)
        return results + runner.health(baseline_errors)
    finally:
        runner.close()


def _run_side_by_side(runner: Runner, cases: Sequence[Case], baseline_s: float) -> list[Result]:
    """Run `cases` in threads while timing a good request: it must be served meanwhile."""
    slow_results: list[Result | None] = [None] * len(cases)

    def run(k: int) -> None:
        slow_results[k] = runner.run(cases[k])

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(cases))]
    for t in threads:
        t.start()
    time.sleep(0.2)  # the slow clients have sent their headers and are trickling
    status, seconds = runner.good_rest()
    bound = 5 * baseline_s + 0.5
    during = Result("health: a good REST predict during the slow uploads", "health",
                    f"200 in < {bound:.2f} s", f"{status} in {seconds:.2f} s",
                    status == 200 and seconds < bound, seconds)
    for t in threads:
        t.join()
    return [r for r in slow_results if r is not None] + [during]


# --- CLI -----------------------------------------------------------------------------------


def table(results: Sequence[Result]) -> str:
    """A plain-text table: one row per case or check."""
    rows = [("case", "transport", "expected", "got", "ok", "ms")] + [
        (r.name, r.transport, r.expected, r.got if len(r.got) <= 90 else r.got[:87] + "...",
         "ok" if r.ok else "FAIL", f"{r.seconds * 1000:.0f}") for r in results]
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Send malformed requests to a gateway and check "
                                            "each gets its documented error.")
    p.add_argument("--rest", required=True, help="REST base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--grpc", default=None, help="gRPC HOST:PORT (omit to skip the gRPC cases)")
    defaults = Limits()
    p.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes)
    p.add_argument("--max-image-pixels", type=int, default=defaults.max_image_pixels)
    p.add_argument("--max-persons", type=int, default=defaults.max_persons)
    p.add_argument("--body-timeout-s", type=float, default=None,
                   help="the gateway's body_timeout_s; given, the slow uploads run too")
    p.add_argument("--token", default=None, help="bearer token, when the gateway requires one")
    return p


def main(args: argparse.Namespace) -> int:
    limits = Limits(args.max_body_bytes, args.max_image_pixels, args.max_persons,
                    args.body_timeout_s)
    start = time.perf_counter()
    results = run_corpus(args.rest, args.grpc, limits, token=args.token)
    print(table(results))
    failed = [r for r in results if not r.ok]
    print(f"\n{len(results) - len(failed)}/{len(results)} passed in "
          f"{time.perf_counter() - start:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
