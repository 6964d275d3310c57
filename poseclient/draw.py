"""Draw a result obtained over gRPC with the service's own renderer (what /v1/render draws).

Imports the service's decoder and renderer (Pillow, pydantic; not torch): the command line
imports this module only for `--grpc --render` (see tests/test_boundaries.py).
"""

from __future__ import annotations

from poseclient.errors import BadInput
from poseclient.results import PredictResult
from service.core import DRAFT_MIN_SIDE
from service.errors import ServiceError
from service.imaging import decode_image
from service.render import Scene, ScenePerson, render_pose_png
from service.settings import Settings


def render_result(image: bytes, result: PredictResult, joint: str) -> bytes:
    """The PNG of `result` over `image`; the first person's heatmaps when the result has them."""
    settings = Settings()
    try:
        # Decoded as the service decodes for /v1/render.
        decoded = decode_image(image, content_type=None, max_bytes=settings.max_body_bytes,
                               max_pixels=settings.max_image_pixels, min_detail=DRAFT_MIN_SIDE)
    except ServiceError as exc:
        raise BadInput(f"Cannot draw over the image: {exc.message}") from None
    maps = result.persons[0].heatmaps if result.persons else None
    return render_pose_png(decoded.image, scene(result), joint, maps)


def scene(result: PredictResult) -> Scene:
    """What the renderer draws of a client's result."""
    return Scene(result.width, result.height, [
        ScenePerson((p.box.x, p.box.y, p.box.w, p.box.h), p.as_array("pixel"),
                    p.as_array("relative_mm"), p.as_array("normalised"))
        for p in result.persons
    ])
