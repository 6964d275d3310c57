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
    rate: float | None = None  # frames per second, when the file says


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
    rate = float(stream.average_rate) if stream.average_rate else None
    return Video(_av_frames(container, stream), stream.frames or None, size, "av", rate)


def _av_frames(container, stream) -> Iterator[Frame]:
    with container:
        for i, frame in enumerate(container.decode(stream)):
            yield Frame(i, frame.time, _jpeg(frame.to_image()))


class Mp4Writer:
    """Frames (PIL images) into an H.264 MP4 with PyAV, `width` pixels wide (height in
    proportion; both even, as yuv420p needs), at `rate` frames per second."""

    def __init__(self, path: str | Path, size: tuple[int, int], rate: float,
                 width: int | None = None):
        try:
            import av
        except ImportError:
            raise BadInput("Writing an MP4 needs PyAV: pip install av") from None
        w = width or size[0]
        h = round(size[1] * w / size[0])
        self.size = (max(2, w - w % 2), max(2, h - h % 2))
        self._av = av
        self._container = av.open(str(path), "w")
        from fractions import Fraction

        self._stream = self._container.add_stream(
            "libx264", rate=Fraction(rate).limit_denominator(1001))
        self._stream.width, self._stream.height = self.size
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": "28", "preset": "medium"}

    def write(self, image: Image.Image) -> None:
        frame = self._av.VideoFrame.from_image(
            image.convert("RGB").resize(self.size, Image.Resampling.BILINEAR))
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
