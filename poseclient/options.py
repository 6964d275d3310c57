"""What a predict call may ask for besides the image, checked before anything is sent."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from posecontract.geometry import Intrinsics

HeatmapFormat = Literal["none", "f16", "png"]
HEATMAP_FORMATS: tuple[str, ...] = ("none", "f16", "png")
ImageInput = bytes | str | os.PathLike[str]


@dataclass(frozen=True)
class Options:
    """Person boxes [x, y, w, h] in pixels, camera intrinsics, root depth, heatmap format."""

    boxes: tuple[tuple[float, float, float, float], ...] = ()
    intrinsics: Intrinsics | None = None
    root_depth_mm: float | None = None
    heatmaps: HeatmapFormat = "none"


def make_options(boxes: Sequence[Sequence[float]] | None = None,
                 intrinsics: Intrinsics | Sequence[float] | None = None,
                 root_depth_mm: float | None = None,
                 heatmaps: bool | str = False) -> Options:
    """Check and normalise the options of a call; ValueError names the bad one.

    `heatmaps`: False or "none" for none, True or "f16" for float16, "png" for 16-bit PNG
    tiles; the results carry them as float32 arrays whichever way they travelled.
    """
    checked = []
    for i, box in enumerate(boxes or ()):
        if len(box) != 4:
            raise ValueError(f"Box {i} must be [x, y, w, h], got {list(box)!r}")
        checked.append(tuple(float(v) for v in box))
    if intrinsics is not None and not isinstance(intrinsics, Intrinsics):
        if len(intrinsics) != 4:
            raise ValueError(f"Intrinsics must be (fx, fy, cx, cy), got {list(intrinsics)!r}")
        intrinsics = Intrinsics(*(float(v) for v in intrinsics))
    if heatmaps is True or heatmaps is False:
        heatmaps = "f16" if heatmaps else "none"
    if heatmaps not in HEATMAP_FORMATS:
        raise ValueError(f"heatmaps must be one of {', '.join(HEATMAP_FORMATS)} (or a bool), "
                         f"got {heatmaps!r}")
    return Options(tuple(checked), intrinsics,
                   None if root_depth_mm is None else float(root_depth_mm), heatmaps)


def query_params(options: Options) -> dict[str, str]:
    """The REST query parameters of `options`."""
    params: dict[str, str] = {}
    if options.boxes:
        params["boxes"] = json.dumps([list(b) for b in options.boxes])
    if options.intrinsics is not None:
        k = options.intrinsics
        params.update(fx=repr(k.fx), fy=repr(k.fy), cx=repr(k.cx), cy=repr(k.cy))
    if options.root_depth_mm is not None:
        params["root_depth_mm"] = repr(options.root_depth_mm)
    if options.heatmaps != "none":
        params["heatmaps"] = options.heatmaps
    return params


def read_image(image: ImageInput) -> bytes:
    """The encoded bytes of an image given as bytes or as a path."""
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image)
    return Path(image).read_bytes()
