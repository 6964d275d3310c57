"""Frames of a video or animated image, encoded as JPEG for StreamPredict.

Pillow reads animated GIF, PNG, WebP and multi-page TIFF (and any still image, as one frame);
PyAV (`pip install av`), when installed, reads everything else FFmpeg reads (MP4, MKV, ...).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageSequence, UnidentifiedImageError

from poseclient.errors import BadInput

JPEG_QUALITY = 92


@dataclass(frozen=True)
class Frame:
    """One frame: its index, its time in seconds when the file says, its JPEG bytes."""

    index: int
    time_s: float | None
    jpeg: bytes


@dataclass
class Video:
    """The frames of a file, read lazily; `count` when the file says how many."""

    frames: Iterator[Frame]
    count: int | None
    size: tuple[int, int]  # width, height
    reader: str  # "pillow" or "av"


def open_video(path: str | Path) -> Video:
    """Open `path` with Pillow if it is an image, else with PyAV; BadInput says why not."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"No such file: {path}")
    try:
        image = Image.open(path)
    except UnidentifiedImageError:
        return _open_av(path)
    return Video(_pillow_frames(image), getattr(image, "n_frames", 1), image.size, "pillow")


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def _pillow_frames(image: Image.Image) -> Iterator[Frame]:
    with image:
        t = 0.0
        for i, frame in enumerate(ImageSequence.Iterator(image)):
            duration = frame.info.get("duration")  # milliseconds, GIF/APNG/WebP only
            yield Frame(i, t if duration is not None else None, _jpeg(frame))
            t += (duration or 0) / 1000


def _open_av(path: Path) -> Video:
    try:
        import av
    except ImportError:
        raise BadInput(f"{path} is not an image Pillow reads; to read video files install "
                       "PyAV: pip install av") from None
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise BadInput(f"Cannot read {path} as an image or a video: {exc}") from None
    if not container.streams.video:
        container.close()
        raise BadInput(f"{path} has no video stream")
    stream = container.streams.video[0]
    size = (stream.codec_context.width, stream.codec_context.height)
    return Video(_av_frames(container, stream), stream.frames or None, size, "av")


def _av_frames(container, stream) -> Iterator[Frame]:
    with container:
        for i, frame in enumerate(container.decode(stream)):
            yield Frame(i, frame.time, _jpeg(frame.to_image()))
