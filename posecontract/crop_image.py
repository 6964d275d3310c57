"""Rendering a `Crop` from an image: the one resampling that training and serving share.

The model only ever sees crops made here, so a crop cut by the service is resampled exactly as
the crops it was trained on. `Crop.pixel_matrix` maps original-image pixels to crop pixels (see
`posecontract.geometry`); the image handed in may be a reduced decode of the original (JPEG
draft mode), `source_scale` decoded pixels per original pixel, which this folds into the map.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from posecontract.geometry import Crop


def render_crop(
    image: Image.Image, crop: Crop, supersample: int = 2, source_scale: float = 1.0
) -> np.ndarray:
    """Resample `image` into `crop`: (size, size, 3) uint8 RGB, black outside the source.

    `source_scale` is decoded pixels per original pixel (1: `image` is the original; 1/4: it
    was decoded at a quarter of the size, with pixel edges aligned so that decoded coordinate
    = scale x original coordinate). Renders at `supersample` x the resolution with bilinear
    sampling, then downsamples with Lanczos (MargiPose's 2x "msaa"). Pillow's affine transform
    samples output pixel (i, j) at its centre (i + 0.5, j + 0.5) mapped through the given
    inverse map, and reads source pixel k at k + 0.5, which is our continuous convention
    (pixel i covers [i, i + 1)), so the inverse pixel map is passed unchanged.
    """
    if supersample < 1:
        raise ValueError(f"Supersampling factor must be a positive integer, got {supersample}")
    if not (source_scale > 0 and math.isfinite(source_scale)):
        raise ValueError(f"Source scale must be a positive finite number, got {source_scale}")
    big = crop.size * supersample
    from_decoded = np.diag([1.0 / source_scale, 1.0 / source_scale, 1.0])
    to_big = np.diag([supersample, supersample, 1.0]) @ crop.pixel_matrix @ from_decoded
    inverse = np.linalg.inv(to_big)  # big-crop pixel -> decoded source pixel
    # convert() always copies; skip it for RGB sources, which are the 12-megapixel ones.
    source = image if image.mode == "RGB" else image.convert("RGB")
    rendered = source.transform(
        (big, big),
        Image.Transform.AFFINE,
        tuple(float(a) for a in inverse[:2].ravel()),
        resample=Image.Resampling.BILINEAR,
        fillcolor=(0, 0, 0),
    )
    if supersample > 1:
        rendered = rendered.resize((crop.size, crop.size), Image.Resampling.LANCZOS)
    return np.asarray(rendered, dtype=np.uint8).copy()
