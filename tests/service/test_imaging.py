"""Tests for request image decoding: limits, errors, colour modes, orientation, draft mode."""

import io
import struct
import time
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from posecontract.geometry import Intrinsics, make_crop
from service.errors import ImageTooLarge, InvalidImage, PayloadTooLarge, UnsupportedMediaType
from service.imaging import DecodedImage, crop_for_model, decode_image

MB = 2**20
MAX_PIXELS = 50_000_000


def _decode(data: bytes, content_type: str | None = None, *, max_bytes: int = 64 * MB,
            max_pixels: int = MAX_PIXELS, min_detail: int | None = None) -> DecodedImage:
    """decode_image with roomy default limits."""
    return decode_image(data, content_type=content_type, max_bytes=max_bytes,
                        max_pixels=max_pixels, min_detail=min_detail)


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    """Save `image` in `fmt` to bytes."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, body, CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes = b"") -> bytes:
    """A PNG written by hand: any header Pillow would refuse to write, and `rows` as its IDAT."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(rows)) + _png_chunk(b"IEND", b""))


def _smooth_rgb(width: int, height: int) -> Image.Image:
    """A smooth colourful test picture: slow sines and a ramp, upsampled from a quarter size."""
    v, u = np.mgrid[: height // 4, : width // 4]
    small = np.stack([128 + 100 * np.sin(u / 60), 128 + 100 * np.cos(v / 45),
                      255 * (u + v) / (u.max() + v.max())], axis=-1)
    quarter = Image.fromarray(small.astype(np.uint8))
    return quarter.resize((width, height), Image.Resampling.BILINEAR)


@pytest.fixture(scope="module")
def photo_12mp() -> bytes:
    """A 4000x3000 JPEG of a smooth picture, like a 12-megapixel phone photo."""
    return _encode(_smooth_rgb(4000, 3000), "JPEG", quality=90)


# -- limits and errors -------------------------------------------------------------------------


def test_empty_body_is_invalid_image() -> None:
    with pytest.raises(InvalidImage, match=r"empty \(0 bytes\).*image/jpeg"):
        _decode(b"", "image/jpeg")


def test_body_over_the_byte_limit_is_413() -> None:
    data = _encode(Image.new("RGB", (64, 64), (10, 20, 30)), "PNG")
    with pytest.raises(PayloadTooLarge, match=f"is {len(data)} bytes; the limit is 100 bytes"):
        _decode(data, "image/png", max_bytes=100)


@pytest.mark.parametrize("content_type", ["text/plain", "image/svg+xml", "application/json"])
def test_unsupported_content_type_is_415_and_lists_the_allowed(content_type: str) -> None:
    data = _encode(Image.new("RGB", (8, 8)), "PNG")
    with pytest.raises(UnsupportedMediaType, match="image/jpeg, image/png, image/webp") as info:
        _decode(data, content_type)
    assert content_type in info.value.message and info.value.http_status == 415


@pytest.mark.parametrize(
    "content_type", [None, "", "application/octet-stream", "IMAGE/PNG; charset=binary",
                     "image/jpeg"],  # a mislabelled PNG still decodes: the bytes decide
)
def test_missing_generic_or_mislabelled_types_are_sniffed(content_type: str | None) -> None:
    decoded = _decode(_encode(Image.new("RGB", (8, 6), (1, 2, 3)), "PNG"), content_type)
    assert decoded.format == "PNG" and decoded.image.size == (8, 6)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"])
def test_every_accepted_format_decodes(fmt: str) -> None:
    decoded = _decode(_encode(Image.new("RGB", (12, 10), (0, 0, 255)), fmt))
    assert (decoded.format, decoded.width, decoded.height, decoded.scale) == (fmt, 12, 10, 1.0)
    assert decoded.image.mode == "RGB"
    np.testing.assert_allclose(np.asarray(decoded.image)[5, 6], [0, 0, 255], atol=3)


def test_unknown_bytes_are_415() -> None:
    noise = b"\x00" + np.random.default_rng(0).bytes(999)
    with pytest.raises(UnsupportedMediaType, match="not an image in a format we decode"):
        _decode(noise)


def test_a_known_signature_with_garbage_after_it_is_422() -> None:
    garbage = b"\xff\xd8\xff" + np.random.default_rng(1).bytes(997)
    with pytest.raises(InvalidImage, match="JPEG image is corrupt or truncated"):
        _decode(garbage)


def test_an_unaccepted_format_pillow_knows_is_415() -> None:
    with pytest.raises(UnsupportedMediaType):
        _decode(_encode(Image.new("RGB", (16, 16)), "ICO"))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("keep", [0.5, 0.1, 20])  # fractions of the file, or a byte count
def test_truncated_images_are_invalid(fmt: str, keep: float) -> None:
    noise = np.random.default_rng(2).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    data = _encode(Image.fromarray(noise), fmt)
    cut = int(keep) if keep >= 1 else int(len(data) * keep)
    with pytest.raises(InvalidImage, match=f"{fmt} image is corrupt or truncated") as info:
        _decode(data[:cut])
    assert info.value.http_status == 422


def test_too_many_pixels_is_refused_from_the_header() -> None:
    # 5000x5000 grey, all zeros: a real, valid and tiny PNG whose pixels would take 25 MB.
    data = _png(5000, 5000, 8, 0, b"\x00" * 5001 * 5000)
    assert len(data) < 50_000
    with pytest.raises(ImageTooLarge, match=r"5000x5000 = 25000000 pixels; the limit is 1000000"):
        _decode(data, max_pixels=1_000_000)


@pytest.mark.parametrize("side", [100_000, 10_000])  # over twice Pillow's limit; just over it
def test_decompression_bombs_are_refused_without_decoding(side: int) -> None:
    # A header declaring side x side RGB pixels (30 GB or 300 MB) and no data to speak of. Our
    # own limit is set above Pillow's, so Pillow's bomb error or warning is what trips.
    data = _png(side, side, 8, 2)
    filters = list(warnings.filters)
    start = time.perf_counter()
    with pytest.raises(ImageTooLarge) as info:
        _decode(data, max_pixels=10**12)
    assert time.perf_counter() - start < 0.5
    assert info.value.http_status == 413 and "too many pixels" in info.value.message
    assert warnings.filters == filters  # the warning filter we set did not leak


def test_concurrent_decodes_leave_the_warning_filters_alone() -> None:
    bomb, fine = _png(10_000, 10_000, 8, 2), _encode(Image.new("RGB", (32, 32)), "PNG")
    filters = list(warnings.filters)

    def outcome(data: bytes) -> str:
        try:
            return _decode(data, max_pixels=10**12).format
        except ImageTooLarge:
            return "refused"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(outcome, [bomb, fine] * 100))
    assert outcomes == ["refused", "PNG"] * 100
    assert warnings.filters == filters


# -- colour modes ------------------------------------------------------------------------------


def _pixels(data: bytes) -> np.ndarray:
    """Decode and return the RGB pixels (H, W, 3)."""
    decoded = _decode(data)
    assert decoded.image.mode == "RGB"
    return np.asarray(decoded.image)


def test_greyscale_l_and_bilevel_are_replicated() -> None:
    assert (_pixels(_encode(Image.new("L", (4, 3), 77), "PNG")) == 77).all()
    assert (_pixels(_encode(Image.new("1", (4, 3), 1), "PNG")) == 255).all()


def test_16_bit_greyscale_png_is_scaled_not_clipped() -> None:
    values = np.array([[65535, 32896, 257, 0]], dtype=np.uint16)
    data = _encode(Image.fromarray(values), "PNG")
    decoded = _decode(data)
    assert decoded.mode == "I;16"
    np.testing.assert_array_equal(np.asarray(decoded.image)[0, :, 0], [255, 128, 1, 0])


def test_16_bit_rgb_png_is_scaled() -> None:
    samples = np.array([[[65535, 32896, 257], [0, 65535, 0]]], dtype=">u2")
    data = _png(2, 1, 16, 2, b"".join(b"\x00" + row.tobytes() for row in samples))
    np.testing.assert_array_equal(_pixels(data)[0], [[255, 128, 1], [0, 255, 0]])


def test_32_bit_integer_and_float_greyscale() -> None:
    ints = np.array([[65535, 32896, 70000, -5]], dtype=np.int32)  # 16-bit range, clipped
    assert Image.fromarray(ints).mode == "I"
    np.testing.assert_array_equal(
        _pixels(_encode(Image.fromarray(ints), "TIFF"))[0, :, 0], [255, 128, 255, 0])
    floats = np.array([[1.0, 0.5, 2.0, -1.0]], dtype=np.float32)  # 0..1, clipped
    np.testing.assert_array_equal(
        _pixels(_encode(Image.fromarray(floats), "TIFF"))[0, :, 0], [255, 128, 255, 0])


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparency_composites_on_black(fmt: str) -> None:
    image = Image.new("P", (4, 2), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)  # index 0 red, 1 blue
    image.paste(1, (2, 0, 4, 2))
    pixels = _pixels(_encode(image, fmt, transparency=1))
    assert (pixels[:, :2] == [255, 0, 0]).all()
    assert (pixels[:, 2:] == 0).all()  # blue but transparent


def test_palette_without_transparency_keeps_its_colours() -> None:
    image = Image.new("P", (2, 2), 1)
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    assert (_pixels(_encode(image, "PNG")) == [10, 200, 30]).all()


@pytest.mark.parametrize(("mode", "colour", "expected"), [
    ("RGBA", (200, 100, 50, 128), (100, 50, 25)),
    ("LA", (200, 128), (100, 100, 100)),
    ("RGBA", (200, 100, 50, 0), (0, 0, 0)),
])
def test_alpha_composites_on_black(mode: str, colour: tuple, expected: tuple) -> None:
    pixels = _pixels(_encode(Image.new(mode, (3, 3), colour), "PNG"))
    np.testing.assert_allclose(pixels.reshape(-1, 3), [expected] * 9, atol=1)


def test_cmyk_converts_to_known_colours() -> None:
    image = Image.new("CMYK", (4, 2), (0, 255, 255, 0))  # red
    image.paste((0, 0, 0, 128), (2, 0, 4, 2))  # mid grey
    tiff = _decode(_encode(image, "TIFF"))
    assert tiff.mode == "CMYK"
    assert (np.asarray(tiff.image)[:, :2] == [255, 0, 0]).all()
    assert (np.asarray(tiff.image)[:, 2:] == 127).all()
    jpeg = _pixels(_encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95))
    np.testing.assert_allclose(jpeg.reshape(-1, 3), [(255, 0, 0)] * 256, atol=4)


# -- EXIF orientation --------------------------------------------------------------------------


def _marked_jpeg(width: int, height: int, orientation: int, undo: Image.Transpose | None
                 ) -> bytes:
    """A grey picture, width x height as displayed, with a red 16x16 top-left corner, stored
    turned by `undo` (the inverse of what the EXIF `orientation` asks a viewer to do)."""
    shown = Image.new("RGB", (width, height), (128, 128, 128))
    shown.paste((255, 0, 0), (0, 0, 16, 16))
    stored = shown if undo is None else shown.transpose(undo)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encode(stored, "JPEG", quality=95, exif=exif)


@pytest.mark.parametrize(("orientation", "undo"), [
    (1, None),
    (3, Image.Transpose.ROTATE_180),
    (6, Image.Transpose.ROTATE_90),  # shown turned 90 degrees clockwise: stored counter-clockwise
    (8, Image.Transpose.ROTATE_270),
])
def test_exif_orientation_is_applied(orientation: int, undo: Image.Transpose | None) -> None:
    decoded = _decode(_marked_jpeg(64, 40, orientation, undo))
    assert (decoded.width, decoded.height) == (64, 40) == decoded.image.size
    pixels = np.asarray(decoded.image).astype(int)
    np.testing.assert_allclose(pixels[8, 8], [255, 0, 0], atol=8)
    for corner in (pixels[8, -8], pixels[-8, 8], pixels[-8, -8]):
        np.testing.assert_allclose(corner, [128, 128, 128], atol=8)


# -- JPEG draft mode ---------------------------------------------------------------------------


@pytest.mark.parametrize(("min_detail", "scale"), [
    (None, 1.0), (3000, 1.0), (1500, 0.5), (512, 0.25), (300, 0.125),
])
def test_draft_mode_reduces_only_as_far_as_min_detail_allows(
    photo_12mp: bytes, min_detail: int | None, scale: float
) -> None:
    decoded = _decode(photo_12mp, "image/jpeg", min_detail=min_detail)
    assert decoded.scale == scale and (decoded.width, decoded.height) == (4000, 3000)
    assert decoded.image.size == (round(4000 * scale), round(3000 * scale))


def test_draft_crop_matches_the_full_decode(photo_12mp: bytes) -> None:
    crop = make_crop(Intrinsics.from_fov(4000, 3000, 60.0), (2100.0, 1400.0), 1400.0, 256)
    full = crop_for_model(_decode(photo_12mp), crop)
    quarter = _decode(photo_12mp, min_detail=512)
    assert quarter.scale == 0.25
    reduced = crop_for_model(quarter, crop)
    assert full.shape == reduced.shape == (256, 256, 3) and reduced.dtype == np.uint8
    assert np.abs(full.astype(int) - reduced.astype(int)).mean() < 4


def test_draft_crop_lands_where_the_full_crop_does_under_exif_rotation() -> None:
    # A bright spot at (1000, 300) as displayed (1200 x 1600), stored for EXIF orientation 6.
    v, u = np.mgrid[:1600, :1200] + 0.5
    spot = 255 * np.exp(-((u - 1000) ** 2 + (v - 300) ** 2) / (2 * 30.0**2))
    shown = Image.fromarray(np.repeat(spot.astype(np.uint8)[..., None], 3, axis=-1))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encode(shown.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif)
    crop = make_crop(Intrinsics.from_fov(1200, 1600, 60.0), (960.0, 340.0), 800.0, 256)
    centroids = []
    for min_detail in (None, 300):
        decoded = _decode(data, min_detail=min_detail)
        assert (decoded.width, decoded.height) == (1200, 1600)
        weight = crop_for_model(decoded, crop)[..., 0].astype(float)
        rows, cols = np.mgrid[:256, :256] + 0.5
        centroids.append(np.array([(weight * cols).sum(), (weight * rows).sum()]) / weight.sum())
    assert decoded.scale == 0.25
    # The spot is 40 px right of and 40 px above the crop centre: 12.8 crop px each way.
    np.testing.assert_allclose(centroids, [[140.8, 115.2]] * 2, atol=0.1)


@pytest.mark.parametrize(("orientation", "scale"), [
    (1, 0.125), (6, 0.125),  # 6 reverses the raw y axis: 800 rows are whole 8-pixel blocks
    (3, 1.0), (8, 1.0),  # both reverse the raw x axis: 1001 columns are not
])
def test_draft_mode_keeps_reversed_axes_aligned(orientation: int, scale: float) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _encode(Image.new("RGB", (1001, 800), (90, 90, 90)), "JPEG", exif=exif)
    assert _decode(data, min_detail=50).scale == scale


def test_draft_mode_leaves_other_formats_whole() -> None:
    data = _encode(Image.new("RGB", (800, 600)), "PNG")
    assert _decode(data, min_detail=10).scale == 1.0


def test_min_detail_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive pixel count or None, got 0"):
        _decode(_encode(Image.new("RGB", (8, 8)), "PNG"), min_detail=0)


def test_crop_for_model_gives_a_model_input() -> None:
    decoded = _decode(_encode(Image.new("L", (640, 480), 60), "PNG"))
    out = crop_for_model(decoded, make_crop(Intrinsics.from_fov(640, 480, 60.0),
                                            (320.0, 240.0), 300.0, 256))
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8
    assert (out[100:150, 100:150] == 60).all()
