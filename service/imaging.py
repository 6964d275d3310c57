"""Decoding request images with Pillow: limits first, then pixels, always 8-bit RGB out.

`decode_image` checks, in order: the declared content type (415 unless one of
`ACCEPTED_TYPES`, or absent / `application/octet-stream`, in which case the bytes decide), an
empty body (422), the byte limit (413), the format (sniffed from the bytes among the accepted
ones, whatever the declared type said), and the pixel count from the header, before any pixel
is decoded (413). Bytes that start like none of the accepted formats are 415; bytes that start
like one but do not decode (corrupt, truncated) are 422.

The result is oriented by its EXIF tag and converted to RGB:
- greyscale L and 1 are replicated; 16-bit and 32-bit integer greyscale (I;16*, I) are read as
  0..65535 and rounded to 0..255 (Pillow's own conversion clips them at 255 instead);
  float greyscale (F) is read as 0..1, clipped;
- palette images go through RGBA when they carry transparency; CMYK and YCbCr use Pillow's
  conversion (no ICC colour management);
- transparent pixels are composited on black, the colour a crop gets outside the image, so a
  cut-out reads to the model as "no picture here".

JPEG draft mode: with `min_detail`, a JPEG is decoded at 1/2, 1/4 or 1/8 size (libjpeg's DCT
scaling, nearly free) as long as its smaller side keeps at least `min_detail` pixels;
`DecodedImage.scale` says which, and `crop_for_model` folds it into the crop. A decoded pixel
k covers original pixels [k / scale, (k + 1) / scale); an axis that the EXIF orientation
reverses must be a multiple of the reduction for that to survive the turn, else a smaller one
is used.
"""

from __future__ import annotations

import io
import struct
import threading
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, JpegImagePlugin, UnidentifiedImageError

from posecontract.crop_image import render_crop
from posecontract.geometry import Crop
from service.errors import ImageTooLarge, InvalidImage, PayloadTooLarge, UnsupportedMediaType

# Content type -> Pillow format name.
ACCEPTED_TYPES = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/webp": "WEBP",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
    "image/gif": "GIF",
}
# Content types that say nothing about the format: the bytes are sniffed instead.
SNIFFED_TYPES = ("application/octet-stream",)

# Leading bytes of each accepted format: a match that then fails to decode is corrupt (422).
_SIGNATURES = {
    "JPEG": (b"\xff\xd8\xff",),
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "GIF": (b"GIF87a", b"GIF89a"),
    "BMP": (b"BM",),
    "TIFF": (b"II*\x00", b"MM\x00*"),
}

# EXIF orientation -> the transpose that undoes it, and the raw axes (0: x, 1: y) it reverses.
_ORIENTATIONS = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT, (0,)),
    3: (Image.Transpose.ROTATE_180, (0, 1)),
    4: (Image.Transpose.FLIP_TOP_BOTTOM, (1,)),
    5: (Image.Transpose.TRANSPOSE, ()),
    6: (Image.Transpose.ROTATE_270, (1,)),
    7: (Image.Transpose.TRANSVERSE, (0, 1)),
    8: (Image.Transpose.ROTATE_90, (0,)),
}
_DRAFT_REDUCTIONS = (8, 4, 2)

# Failures of a recognised format's decoder on bad data (Pillow raises all of these).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)

# Pillow warns about decompression bombs through the process-wide warnings filters; reading
# headers under one lock keeps our catch_warnings blocks from undoing each other across threads.
_HEADER_LOCK = threading.Lock()


@dataclass(frozen=True, eq=False)
class DecodedImage:
    """A decoded, oriented RGB image and how it relates to the original.

    `image` is RGB, `scale` decoded pixels per original pixel (1, or 1/2, 1/4, 1/8 after JPEG
    draft decoding); `width` and `height` are the original image's, after EXIF orientation, in
    the pixels that boxes and intrinsics refer to; `format` is Pillow's name (e.g. "JPEG") and
    `mode` the colour mode before conversion (e.g. "CMYK", "I;16").
    """

    image: Image.Image
    width: int
    height: int
    scale: float
    format: str
    mode: str


def decode_image(
    data: bytes,
    *,
    content_type: str | None,
    max_bytes: int,
    max_pixels: int,
    min_detail: int | None,
) -> DecodedImage:
    """Decode an uploaded image into oriented 8-bit RGB, refusing anything over the limits.

    `min_detail` (None: always full size) allows JPEG draft decoding down to that many pixels
    on the smaller side. Raises UnsupportedMediaType (415), InvalidImage (422),
    PayloadTooLarge or ImageTooLarge (413); see the module docstring.
    """
    if min_detail is not None and min_detail < 1:
        raise ValueError(f"min_detail must be a positive pixel count or None, got {min_detail}")
    _check_content_type(content_type)
    if not data:
        raise InvalidImage(f"The image is empty (0 bytes); send one of {_accepted_names()}")
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"The image is {len(data)} bytes; the limit is {max_bytes} bytes")
    image = _open_header(data)
    width, height = image.size
    _check_pixels(width, height, max_pixels)
    try:
        orientation = _orientation(image)
        scale = 1.0
        if min_detail is not None and isinstance(image, JpegImagePlugin.JpegImageFile):
            scale = _draft(image, orientation, min_detail)
        image.load()
        mode = image.mode
        rgb = _to_rgb(image)
    except _DECODE_ERRORS as e:
        raise InvalidImage(f"The {image.format} image is corrupt or truncated: {e}") from e
    if orientation in _ORIENTATIONS:
        rgb = rgb.transpose(_ORIENTATIONS[orientation][0])
        if orientation >= 5:  # 5..8 turn the picture a quarter: the sides swap
            width, height = height, width
    return DecodedImage(rgb, width, height, scale, str(image.format), mode)


def crop_for_model(decoded: DecodedImage, crop: Crop) -> np.ndarray:
    """Render `crop` (in original-image pixels) from `decoded`: (size, size, 3) uint8 RGB."""
    return render_crop(decoded.image, crop, source_scale=decoded.scale)


def _accepted_names() -> str:
    """The accepted content types, for messages."""
    return ", ".join(ACCEPTED_TYPES)


def _check_content_type(content_type: str | None) -> None:
    """Refuse a declared content type that is not an image type we decode."""
    if content_type is None:
        return
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type and media_type not in ACCEPTED_TYPES and media_type not in SNIFFED_TYPES:
        raise UnsupportedMediaType(
            f"Content type {content_type!r} is not supported; send one of {_accepted_names()} "
            f"(or {', '.join(SNIFFED_TYPES)} to have the format detected)"
        )


def _looks_like(data: bytes) -> str | None:
    """The accepted format whose signature `data` starts with, if any."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for name, signatures in _SIGNATURES.items():
        if data.startswith(signatures):
            return name
    return None


def _open_header(data: bytes) -> Image.Image:
    """Identify `data` among the accepted formats and read its header, no pixels yet."""
    try:
        with _HEADER_LOCK, warnings.catch_warnings():
            # As an error, the warning stops the header parse and is reported below.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=list(ACCEPTED_TYPES.values()))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLarge(f"The image has too many pixels: {e}") from e
    except UnidentifiedImageError as e:
        name = _looks_like(data)
        if name is None:
            raise UnsupportedMediaType(
                f"The body ({len(data)} bytes, starting {data[:8].hex()}) is not an image in a "
                f"format we decode; send one of {_accepted_names()}"
            ) from e
        raise InvalidImage(f"The {name} image is corrupt or truncated in its header") from e
    except _DECODE_ERRORS as e:
        kind = _looks_like(data) or "submitted"
        raise InvalidImage(f"The {kind} image is corrupt or truncated in its header: {e}") from e


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    """Refuse an image with more pixels than `max_pixels` (or Pillow's own bomb limit)."""
    limit = max_pixels
    if Image.MAX_IMAGE_PIXELS is not None:
        # Under Pillow's own limit too, so its checks while loading pixels never warn.
        limit = min(limit, Image.MAX_IMAGE_PIXELS)
    if width * height > limit:
        raise ImageTooLarge(
            f"The image is {width}x{height} = {width * height} pixels; the limit is {limit} pixels"
        )


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (2..8) of `image`; 1 when absent, upright or invalid."""
    value = image.getexif().get(ExifTags.Base.Orientation, 1)
    return value if value in _ORIENTATIONS else 1


def _draft(image: JpegImagePlugin.JpegImageFile, orientation: int, min_detail: int) -> float:
    """Set up a reduced JPEG decode keeping `min_detail` pixels on the smaller side; its scale."""
    size = image.size
    reversed_axes = _ORIENTATIONS[orientation][1] if orientation in _ORIENTATIONS else ()
    for reduction in _DRAFT_REDUCTIONS:
        if min(size) / reduction < min_detail:
            continue
        # A reversed axis with a partial last decoded pixel would shift by the missing part.
        if any(size[axis] % reduction for axis in reversed_axes):
            continue
        # Pillow picks the largest reduction r in (8, 4, 2, 1) with size // target >= r:
        # for target = size // reduction that is exactly `reduction`.
        result = image.draft("RGB", (size[0] // reduction, size[1] // reduction))
        if result is None:  # a JPEG Pillow cannot reduce (several tiles): decode it whole
            return 1.0
        _, box = result
        return box[2] / size[0]
    return 1.0


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert a loaded image of any supported mode to 8-bit RGB (see the module docstring)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I") or mode == "F":
        values = np.asarray(image).astype(np.float64)
        # I;16 and I hold 16-bit samples (PNG, TIFF); F holds 0..1 intensities.
        full = 1.0 if mode == "F" else 65535.0
        grey = np.rint(np.clip(values / full, 0.0, 1.0) * 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if "A" in image.getbands():
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (0, 0, 0))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    try:
        return image.convert("RGB")
    except ValueError as e:
        raise UnsupportedMediaType(
            f"Colour mode {mode!r} is not supported; send RGB, greyscale, palette, RGBA or CMYK"
        ) from e
