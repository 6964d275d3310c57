"""Reading a predict-like REST request: the image (a raw body or a multipart `image` file) and
its options (query parameters or form fields), within the body's size and time limits.

Options: `boxes` (JSON list of [x, y, w, h]), `fx`, `fy`, `cx`, `cy` (all four or none),
`root_depth_mm`, `heatmaps` (none|f16|png), `timeout_s`; a route may take more (`extra`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from service.errors import InvalidRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType
from service.imaging import ACCEPTED_TYPES, SNIFFED_TYPES
from service.options import PredictOptions, parse_options

OPTION_FIELDS = ("boxes", "fx", "fy", "cx", "cy", "root_depth_mm", "heatmaps", "timeout_s")

# OpenAPI of the predict-like routes, which read the request themselves: the inputs and errors.
_OPTION_SCHEMAS = {
    "boxes": {"type": "string", "description": "JSON list of person boxes [x, y, w, h], pixels"},
    **{k: {"type": "number", "description": "camera intrinsics in pixels: all four or none"}
       for k in ("fx", "fy", "cx", "cy")},
    "root_depth_mm": {"type": "number", "minimum": 100, "maximum": 100000},
    "heatmaps": {"type": "string", "enum": ["none", "f16", "png"]},
    "timeout_s": {"type": "number", "exclusiveMinimum": 0},
}
_BINARY = {"type": "string", "format": "binary"}


def openapi_inputs(extra: dict[str, dict]) -> dict:
    """Request body (a raw image, or multipart with `image`) and options; `extra`: more fields."""
    options = {**_OPTION_SCHEMAS, **extra}
    return {
        # In the query with a raw image body; as form fields (only) with multipart.
        "parameters": [{"name": k, "in": "query", "required": False, "schema": v,
                        "description": "with a raw image body; multipart sends it as a field"}
                       for k, v in options.items()],
        "requestBody": {"required": True, "content": {
            **{t: {"schema": _BINARY} for t in (*ACCEPTED_TYPES, *SNIFFED_TYPES)},
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["image"], "additionalProperties": False,
                "properties": {"image": _BINARY, **options},
            }},
        }},
    }



def options_from_fields(fields: Mapping[str, str]) -> PredictOptions:
    """Build PredictOptions from string fields (form or query); 422 on anything unknown."""
    unknown = sorted(set(fields) - set(OPTION_FIELDS))
    if unknown:
        raise InvalidRequest(f"Unknown options {unknown}; allowed: {', '.join(OPTION_FIELDS)}")
    raw: dict = {}
    if "boxes" in fields:
        try:
            boxes = json.loads(fields["boxes"])
        # ValueError: also a number over Python's 4300-digit limit; RecursionError: too deep.
        except (ValueError, RecursionError):
            raise InvalidRequest("boxes must be JSON: a list of [x, y, w, h]") from None
        if not isinstance(boxes, list) or not all(
            isinstance(b, list) and len(b) == 4 for b in boxes
        ):
            raise InvalidRequest(f"boxes must be a list of [x, y, w, h], got {fields['boxes']!r}")
        raw["boxes"] = [dict(zip("xywh", b, strict=True)) for b in boxes]
    k = [name for name in ("fx", "fy", "cx", "cy") if name in fields]
    if k and len(k) != 4:
        raise InvalidRequest(f"Give all of fx, fy, cx, cy or none of them; got only {k}")
    if k:
        raw["intrinsics"] = {name: fields[name] for name in k}
    for name in ("root_depth_mm", "heatmaps", "timeout_s"):
        if name in fields:
            raw[name] = fields[name]
    return parse_options(raw)


def _single(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Fields as a dict; 422 for a field given twice (which of its values would be meant?)."""
    fields: dict[str, str] = {}
    for name, value in items:
        if name in fields:
            raise InvalidRequest(f"Option {name!r} is given more than once; give it once")
        fields[name] = value
    return fields


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """Read the body, refusing (413) as soon as it passes `limit` bytes, 408 after `timeout_s`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"Request body of {int(declared)} bytes exceeds the {limit}-byte limit"
        )
    chunks, size = [], 0
    try:
        # uvicorn bounds neither a slow body nor one shorter than its Content-Length.
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"Request body exceeds the {limit}-byte limit")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(
            f"The request body did not arrive within {timeout_s:g} s ({size} bytes received, "
            f"Content-Length {declared or 'not given'}); send the whole body within {timeout_s:g} s"
        ) from None
    except ClientDisconnect:  # a client's doing, not a server error: no 500, no traceback
        raise InvalidRequest(
            f"The client closed the connection after {size} bytes of the request body"
        ) from None
    return b"".join(chunks)


@dataclass(frozen=True)
class PredictInput:
    """A predict-like request's image, its declared type, options and route-specific fields."""

    data: bytes
    content_type: str | None
    options: PredictOptions
    extra: dict[str, str]


async def read_predict_request(request: Request, limit: int, timeout_s: float,
                               extra: tuple[str, ...] = ()) -> PredictInput:
    """Body and options of a predict-like request; `extra` names route-specific fields."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        if request.query_params:  # they would be ignored
            raise InvalidRequest(
                "With multipart/form-data give options as form fields, not in the query; "
                f"got query parameters {sorted(request.query_params)}"
            )
        body = await read_body(request, limit, timeout_s)
        form = await _parse_multipart(request, body)
        try:
            uploads = form.getlist("image")
            files = [u for u in uploads if not isinstance(u, str)]
            if len(uploads) != 1 or not files:
                raise InvalidRequest(
                    "Multipart requests need one `image` file field; got "
                    f"{len(uploads)} `image` fields, {len(files)} of them files"
                )
            upload = files[0]
            # A file under any other name is an unknown option too.
            fields = _single((k, v if isinstance(v, str) else "")
                             for k, v in form.multi_items() if k != "image")
            data, image_type = await upload.read(), upload.content_type
        finally:
            await form.close()  # the spooled upload files
    elif content_type.startswith("application/x-www-form-urlencoded"):
        raise UnsupportedMediaType(
            "Send the image as multipart/form-data (field `image`) or as a raw image body"
        )
    else:
        fields = _single(request.query_params.multi_items())
        data, image_type = await read_body(request, limit, timeout_s), content_type or None
    specific = {k: fields.pop(k) for k in extra if k in fields}
    return PredictInput(data, image_type, options_from_fields(fields), specific)


async def _parse_multipart(request: Request, body: bytes) -> FormData:
    """The form in `body` (already read within the limits), parts of at most 1 MiB each."""

    async def chunks():
        yield body

    try:
        return await MultiPartParser(request.headers, chunks()).parse()
    except MultiPartException as exc:
        raise InvalidRequest(
            f"Malformed multipart/form-data body: {exc.message} Send one `image` file "
            "field and options as text fields (each at most 1 MiB)"
        ) from None
