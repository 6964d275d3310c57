"""The marginal heatmaps of one person as they travel: float16 bytes or a 16-bit PNG of tiles.

Both transports carry the same payload: gRPC as the bytes themselves (`pose.v1.Heatmaps`),
REST base64-encoded in JSON. The array is (3, 17, H, W): planes xy, zy, xz; joints.

- `f16`: little-endian float16, C order.
- `png`: one 16-bit greyscale PNG of 3 rows (planes) of 17 tiles (joints). Each tile is scaled
  so that its peak is 65535, and `scale` (planes x joints, row-major) gives that peak's value,
  so values come back to within 1/65535 of their tile's peak.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

FORMATS = ("f16", "png")
_DTYPES = {"f16": "float16", "png": "uint16"}


@dataclass(frozen=True)
class HeatmapPayload:
    """Encoded heatmaps: the format, the array's shape, the stored dtype, bytes and scales."""

    format: str
    shape: tuple[int, ...]
    dtype: str
    data: bytes
    scale: tuple[float, ...] | None = None  # png only: each tile's peak value


def encode(maps: np.ndarray, fmt: str) -> HeatmapPayload:
    """Encode (planes, joints, H, W) marginals in `fmt` (one of FORMATS)."""
    if fmt not in FORMATS:
        raise ValueError(f"Unknown heatmap format {fmt!r}; expected {' or '.join(FORMATS)}")
    maps = np.asarray(maps)
    if maps.ndim != 4:
        raise ValueError(f"heatmaps must have shape (planes, joints, H, W), got {maps.shape}")
    shape = tuple(int(s) for s in maps.shape)
    if fmt == "f16":
        return HeatmapPayload("f16", shape, _DTYPES["f16"], maps.astype("<f2").tobytes())
    from PIL import Image  # only PNG heatmaps need Pillow

    planes, joints, rows, cols = shape
    peaks = maps.reshape(planes, joints, -1).max(axis=-1)
    scaled = maps / np.maximum(peaks, 1e-30)[..., None, None]
    tiles = np.round(scaled * 65535).astype(np.uint16)
    mosaic = tiles.transpose(0, 2, 1, 3).reshape(planes * rows, joints * cols)
    buf = io.BytesIO()
    Image.fromarray(mosaic).save(buf, format="PNG")  # mode I;16 from uint16
    return HeatmapPayload("png", shape, _DTYPES["png"], buf.getvalue(),
                          tuple(float(v) for v in peaks.reshape(-1)))


def decode(fmt: str, shape: tuple[int, ...] | list[int], data: bytes,
           scale: tuple[float, ...] | list[float] | None = None) -> np.ndarray:
    """The float32 array of `shape` that a payload carries."""
    shape = tuple(int(s) for s in shape)
    if fmt == "f16":
        return np.frombuffer(data, dtype="<f2").reshape(shape).astype(np.float32)
    if fmt == "png":
        from PIL import Image

        planes, joints, rows, cols = shape
        mosaic = np.asarray(Image.open(io.BytesIO(data)), dtype=np.float64)
        tiles = mosaic.reshape(planes, rows, joints, cols).transpose(0, 2, 1, 3) / 65535.0
        peaks = np.asarray(scale, dtype=np.float64).reshape(planes, joints, 1, 1)
        return (tiles * peaks).astype(np.float32)
    raise ValueError(f"Unknown heatmap format {fmt!r}; expected {' or '.join(FORMATS)}")
