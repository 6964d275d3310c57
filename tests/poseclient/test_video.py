"""Frames of animated images (Pillow) and video files (PyAV, when installed)."""

import io
import sys

import numpy as np
import pytest
from PIL import Image

from poseclient.errors import BadInput
from poseclient.video import open_video


def write_gif(path, frames: int = 3, size=(64, 48), duration_ms: int = 100) -> None:
    """An animated GIF whose frame i is a flat grey of level 40 + 60 i."""
    images = [Image.new("RGB", size, (40 + 60 * i,) * 3) for i in range(frames)]
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0)


def write_mp4(path, frames: int = 5, size=(64, 48), rate: int = 10) -> None:
    """An MPEG-4 video whose frame i is a flat grey of level 40 + 40 i."""
    av = pytest.importorskip("av", reason="PyAV is not installed (pip install av)")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(frames):
            pixels = np.full((size[1], size[0], 3), 40 + 40 * i, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())


def _level(jpeg: bytes) -> float:
    return float(np.asarray(Image.open(io.BytesIO(jpeg))).mean())


def test_animated_gif_frames_in_order_with_times(tmp_path):
    write_gif(tmp_path / "a.gif", frames=3, duration_ms=100)
    video = open_video(tmp_path / "a.gif")
    assert (video.count, video.size, video.reader) == (3, (64, 48), "pillow")
    frames = list(video.frames)
    assert [f.index for f in frames] == [0, 1, 2]
    assert [f.time_s for f in frames] == pytest.approx([0.0, 0.1, 0.2])
    assert [_level(f.jpeg) for f in frames] == pytest.approx([40, 100, 160], abs=2)


def test_a_still_image_is_one_frame(tmp_path):
    Image.new("RGB", (20, 10), (9, 9, 9)).save(tmp_path / "still.png")
    video = open_video(tmp_path / "still.png")
    frames = list(video.frames)
    assert video.count == 1 and len(frames) == 1 and frames[0].time_s is None
    assert Image.open(io.BytesIO(frames[0].jpeg)).size == (20, 10)


def test_video_file_through_pyav(tmp_path):
    write_mp4(tmp_path / "v.mp4", frames=5, rate=10)
    video = open_video(tmp_path / "v.mp4")
    assert video.reader == "av" and video.size == (64, 48)
    frames = list(video.frames)
    assert len(frames) == 5 and video.count in (5, None)
    assert [f.time_s for f in frames] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert [_level(f.jpeg) for f in frames] == pytest.approx([40, 80, 120, 160, 200], abs=4)


def test_unreadable_files_say_why(tmp_path):
    with pytest.raises(BadInput, match="No such file: .*missing.gif"):
        open_video(tmp_path / "missing.gif")
    (tmp_path / "notes.txt").write_text("not a video")
    pytest.importorskip("av", reason="PyAV is not installed (pip install av)")
    with pytest.raises(BadInput, match=r"Cannot read .*notes.txt as an image or a video: "):
        open_video(tmp_path / "notes.txt")


def test_without_pyav_a_video_asks_for_it(tmp_path, monkeypatch):
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really")
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    with pytest.raises(BadInput) as caught:
        open_video(tmp_path / "clip.mp4")
    assert str(caught.value) == (f"{tmp_path / 'clip.mp4'} is not an image Pillow reads; to "
                                 "read video files install PyAV: pip install av")
