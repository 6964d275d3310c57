"""Property-based fuzzing of request parsing and image decoding: our errors, nothing else.

Whatever a client sends as options (REST fields, raw option dicts, gRPC messages or bytes) and
as image bytes either parses, or fails with the service's own error (a ServiceError with its
HTTP status); valid options survive the trip through their string form unchanged.
"""

import io
import json
import math

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from poseapi.grpc_gen.pose.v1 import pose_pb2
from service.errors import ServiceError
from service.grpc import Undecodable, lenient, options_from_request
from service.imaging import decode_image
from service.options import PredictOptions, check_options, parse_options
from service.rest import OPTION_FIELDS, options_from_fields

from .conftest import jpeg_bytes

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WIDTH, HEIGHT, MAX_PERSONS = 320, 240, 4

floats = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10**6, 10**6)
number_text = st.one_of(
    floats.map(repr), st.sampled_from(["nan", "inf", "-inf", "1e400", "", " 5 ", "0x10", "1_0"]),
    st.text(max_size=8))
json_values = st.recursive(
    st.none() | st.booleans() | floats | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=3), inner,
                                                                 max_size=3),
    max_leaves=20)
boxes_text = st.one_of(
    json_values.map(lambda v: json.dumps(v, allow_nan=True)),
    st.lists(st.lists(floats, min_size=0, max_size=5), max_size=6).map(json.dumps),
    st.text(max_size=30),
    st.integers(1, 3000).map(lambda n: "[" * n),
    st.integers(4000, 6000).map(lambda n: f"[[{'9' * n}, 1, 2, 3]]"),
)
field_values = {
    "boxes": boxes_text, "fx": number_text, "fy": number_text, "cx": number_text,
    "cy": number_text, "root_depth_mm": number_text, "timeout_s": number_text,
    "heatmaps": st.sampled_from(["none", "f16", "png", "PNG", "", "jpeg"]) | st.text(max_size=5),
}
rest_fields = st.fixed_dictionaries({}, optional={
    **field_values, "colour": st.text(max_size=5), "": st.text(max_size=5)})


def _parse_and_check(parse) -> PredictOptions | None:
    """Run `parse`; a ServiceError is fine (None), any other exception fails the test."""
    try:
        options = parse()
        check_options(options, WIDTH, HEIGHT, MAX_PERSONS)
    except ServiceError as exc:
        assert exc.http_status == 422 and exc.message
        return None
    return options


@FUZZ
@given(rest_fields)
def test_rest_fields_parse_or_fail_with_our_error(fields):
    _parse_and_check(lambda: options_from_fields(fields))


@FUZZ
@given(st.dictionaries(
    st.sampled_from(["boxes", "intrinsics", "root_depth_mm", "heatmaps", "timeout_s", "other"]),
    json_values, max_size=5))
def test_raw_option_dicts_parse_or_fail_with_our_error(raw):
    _parse_and_check(lambda: parse_options(raw))


finite = st.floats(-1e4, 1e4, allow_nan=False)
positive = st.floats(1e-3, 1e4, allow_nan=False)
valid_boxes = st.lists(
    st.tuples(st.floats(-50, WIDTH - 1), st.floats(-50, HEIGHT - 1), st.floats(51, 400),
              st.floats(51, 400)), max_size=MAX_PERSONS)


@FUZZ
@given(boxes=valid_boxes,
       intrinsics=st.none() | st.tuples(positive, positive, finite, finite),
       root_depth=st.none() | st.floats(100, 100_000),
       heatmaps=st.none() | st.sampled_from(["none", "f16", "png"]),
       timeout=st.none() | st.floats(1e-3, 1e6))
def test_valid_options_round_trip_through_their_string_form(boxes, intrinsics, root_depth,
                                                           heatmaps, timeout):
    fields = {}
    if boxes:
        fields["boxes"] = json.dumps([list(b) for b in boxes])
    if intrinsics is not None:
        fields.update(zip(("fx", "fy", "cx", "cy"), map(repr, intrinsics), strict=True))
    for name, value in (("root_depth_mm", root_depth), ("timeout_s", timeout)):
        if value is not None:
            fields[name] = repr(value)
    if heatmaps is not None:
        fields["heatmaps"] = heatmaps
    options = options_from_fields(fields)
    check_options(options, WIDTH, HEIGHT, MAX_PERSONS)  # valid: no error
    assert [(b.x, b.y, b.w, b.h) for b in options.boxes] == boxes
    k = options.intrinsics
    assert (None if k is None else (k.fx, k.fy, k.cx, k.cy)) == intrinsics
    assert options.root_depth_mm == root_depth and options.timeout_s == timeout
    assert options.heatmaps == (heatmaps or "none")
    assert set(fields) <= set(OPTION_FIELDS)


grpc_floats = st.floats(allow_nan=True, allow_infinity=True, width=64)


@st.composite
def grpc_requests(draw) -> pose_pb2.PredictRequest:
    request = pose_pb2.PredictRequest(
        content_type=draw(st.sampled_from(["", "image/jpeg", "text/plain"])),
        heatmaps=draw(st.integers(-2**31, 2**31 - 1)),
    )
    for _ in range(draw(st.integers(0, MAX_PERSONS + 2))):
        request.boxes.add(**{a: draw(grpc_floats) for a in "xywh"})
    if draw(st.booleans()):
        request.intrinsics.CopyFrom(pose_pb2.CameraIntrinsics(
            **{a: draw(grpc_floats) for a in ("fx", "fy", "cx", "cy")}))
    for name in ("root_depth_mm", "timeout_s"):
        if draw(st.booleans()):
            setattr(request, name, draw(grpc_floats))
    return request


@FUZZ
@given(grpc_requests())
def test_grpc_messages_parse_or_fail_with_our_error(request):
    options = _parse_and_check(lambda: options_from_request(request))
    if options is not None:
        assert [(b.x, b.y, b.w, b.h) for b in options.boxes] == [
            (b.x, b.y, b.w, b.h) for b in request.boxes]


@FUZZ
@given(st.binary(max_size=200) | grpc_requests().map(lambda r: r.SerializeToString()).flatmap(
    lambda data: st.tuples(st.integers(0, max(len(data) - 1, 0)), st.binary(max_size=8)).map(
        lambda cut: data[:cut[0]] + cut[1] + data[cut[0]:])))
def test_any_bytes_deserialize_to_a_request_or_our_error(data):
    parsed = lenient(pose_pb2.PredictRequest)(data)  # never raises
    if isinstance(parsed, Undecodable):
        assert parsed.error.http_status == 422 and "PredictRequest" in parsed.error.message
        assert parsed.request_id == ""
    else:
        _parse_and_check(lambda: options_from_request(parsed))


JPEG = jpeg_bytes(64, 48)
PNG = io.BytesIO()
Image.open(io.BytesIO(JPEG)).save(PNG, format="PNG")
IMAGES = (JPEG, PNG.getvalue())


@st.composite
def mutated_images(draw) -> bytes:
    """A real JPEG or PNG with bytes flipped, inserted, deleted or the tail cut."""
    data = bytearray(draw(st.sampled_from(IMAGES)))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        if kind == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        else:
            del data[max(at, 1):]
        assume(len(data) > 1)
    return bytes(data)


def _decode_or_our_error(data: bytes, content_type: str | None) -> None:
    try:
        decoded = decode_image(data, content_type=content_type, max_bytes=100_000,
                               max_pixels=1_000_000, min_detail=16)
    except ServiceError as exc:
        assert exc.http_status in (413, 415, 422) and exc.message
        return
    assert decoded.image.mode == "RGB" and decoded.width > 0 and decoded.height > 0
    assert decoded.width * decoded.height <= 1_000_000 and math.isfinite(decoded.scale)


# Pillow warns (UserWarning) about corrupt metadata it skips, such as EXIF: not a failure.
IGNORE_PILLOW_NOTES = pytest.mark.filterwarnings("ignore::UserWarning")


@IGNORE_PILLOW_NOTES
@FUZZ
@given(mutated_images(),
       st.sampled_from([None, "image/jpeg", "image/png", "application/octet-stream"]))
def test_mutated_images_decode_or_fail_with_our_error(data, content_type):
    _decode_or_our_error(data, content_type)


@IGNORE_PILLOW_NOTES
@FUZZ
@given(st.binary(max_size=512), st.none() | st.text(max_size=20))
def test_random_bytes_and_content_types_fail_with_our_error(data, content_type):
    _decode_or_our_error(data, content_type)


@pytest.mark.parametrize("data", IMAGES)
def test_the_unmutated_images_decode(data):
    assert decode_image(data, content_type=None, max_bytes=100_000, max_pixels=1_000_000,
                        min_detail=None).image.size == (64, 48)
