"""Draw a result obtained over gRPC with the API's renderer (what /v1/render draws).

Needs Pillow and numpy only (`poseapi.render`), not the server: the image is decoded here,
turned upright by its EXIF orientation, at full size. (The service may decode a large JPEG at
a reduced size first; the picture is then resampled from a different source, the drawing the
same.)
"""

from __future__ import annotations

import io

from PIL import Image, ImageOps, UnidentifiedImageError

from poseapi.render import Scene, ScenePerson, render_pose_png
from poseclient.errors import BadInput
from poseclient.results import PredictResult


def render_result(image: bytes, result: PredictResult, joint: str) -> bytes:
    """The PNG of `result` over `image`; the first person's heatmaps when the result has them."""
    try:
        with Image.open(io.BytesIO(image)) as opened:
            upright = ImageOps.exif_transpose(opened).convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise BadInput(f"Cannot draw over the image: {exc}") from None
    maps = result.persons[0].heatmaps if result.persons else None
    return render_pose_png(upright, scene(result), joint, maps)


def scene(result: PredictResult) -> Scene:
    """What the renderer draws of a client's result."""
    return Scene(result.width, result.height, [
        ScenePerson((p.box.x, p.box.y, p.box.w, p.box.h), p.as_array("pixel"),
                    p.as_array("relative_mm"), p.as_array("normalised"), p.visibility(),
                    p.detection_score)
        for p in result.persons
    ])
