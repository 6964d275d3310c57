"""Drive the BlazePose runner from our main venv: a subprocess speaking JSON lines.

    with BlazePoseClient(complexity=2) as blazepose:
        pred = blazepose.predict("data/photos/astronaut.jpg")
        pred.joints2d, pred.joints3d, pred.mask  # (17, 2) px, (17, 3) mm pelvis-relative, (17,)

MediaPipe lives in its own venv (`bash peers/install_blazepose.sh`, default `.venv-mediapipe`
at the repository root, or MARGIPOSE_MEDIAPIPE_VENV); this module never imports it. The runner
is `python -m peers.blazepose --serve` under that venv's interpreter (see its docstring for the
record format); its stderr (MediaPipe's logging) goes to a temporary file quoted in errors.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from peers.blazepose_mapping import NUM_JOINTS, NUM_LANDMARKS

REPO = Path(__file__).resolve().parents[1]
VENV_ENV = "MARGIPOSE_MEDIAPIPE_VENV"
INSTALL_HINT = "run `bash peers/install_blazepose.sh` (or `make blazepose-env`)"


class BlazePoseError(RuntimeError):
    """The runner failed or answered a request with an error."""


class BlazePoseUnavailable(BlazePoseError):
    """The MediaPipe venv is missing or incompletely installed."""


@dataclass(frozen=True)
class BlazePosePrediction:
    """One image's BlazePose result; without a person, NaN coordinates and an all-False mask."""

    found: bool
    joints2d: np.ndarray  # (17, 2) float64, source-image pixels (continuous coordinates)
    joints3d: np.ndarray  # (17, 3) float64, mm, pelvis-relative; x right, y down, z away
    mask: np.ndarray  # (17,) bool: every source landmark has visibility >= 0.5
    landmarks2d: np.ndarray  # (33, 2) float64, BlazePose landmarks in source-image pixels
    world_mm: np.ndarray  # (33, 3) float64, BlazePose world landmarks, mm, hip-centred
    visibility: np.ndarray  # (33,) float64
    seconds: float  # BlazePose's wall time for this image

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> BlazePosePrediction:
        """Parse a runner record (an error record raises `BlazePoseError`)."""
        if "error" in record:
            raise BlazePoseError(f"BlazePose failed on {record.get('image')}: {record['error']}")
        if not record["found"]:
            return cls(False, np.full((NUM_JOINTS, 2), np.nan), np.full((NUM_JOINTS, 3), np.nan),
                       np.zeros(NUM_JOINTS, dtype=bool), np.full((NUM_LANDMARKS, 2), np.nan),
                       np.full((NUM_LANDMARKS, 3), np.nan), np.full(NUM_LANDMARKS, np.nan),
                       float(record["seconds"]))
        joints = record["joints"]
        return cls(
            True,
            np.asarray(joints["pixels"], dtype=np.float64),
            np.asarray(joints["world_mm"], dtype=np.float64),
            np.asarray(joints["mask"], dtype=bool),
            np.asarray(record["pixels"], dtype=np.float64),
            np.asarray(record["world_mm"], dtype=np.float64),
            np.asarray(record["landmarks"], dtype=np.float64)[:, 3],
            float(record["seconds"]),
        )


def find_venv(venv: Path | str | None = None, environ: Mapping[str, str] | None = None
              ) -> Path:
    """The MediaPipe venv: `venv`, else $MARGIPOSE_MEDIAPIPE_VENV, else .venv-mediapipe at the
    repository root. Raises `BlazePoseUnavailable` naming the install script if it is not
    fully installed (its stamp `.installed` is written last)."""
    environ = os.environ if environ is None else environ
    path = Path(venv or environ.get(VENV_ENV) or REPO / ".venv-mediapipe").absolute()
    if not (path / "bin" / "python").exists():
        raise BlazePoseUnavailable(f"No MediaPipe venv at {path}: {INSTALL_HINT}")
    if not (path / ".installed").exists():
        raise BlazePoseUnavailable(
            f"The MediaPipe venv at {path} is incomplete (no .installed stamp): {INSTALL_HINT}")
    return path


class BlazePoseClient:
    """A running `peers.blazepose --serve` process; use as a context manager or `close()`."""

    def __init__(self, complexity: int = 1, venv: Path | str | None = None) -> None:
        if complexity not in (0, 1, 2):
            raise ValueError(f"complexity must be 0 (lite), 1 (full) or 2 (heavy), "
                             f"got {complexity!r}")
        python = find_venv(venv) / "bin" / "python"
        self.complexity = complexity
        self._stderr: IO[bytes] = tempfile.TemporaryFile()
        env = {**os.environ, "PYTHONPATH": str(REPO)}  # the runner is `peers.blazepose`
        self._proc = subprocess.Popen(
            [str(python), "-m", "peers.blazepose", "--serve", "--complexity", str(complexity)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, cwd=REPO,
            env=env, text=True, bufsize=1)

    def _stderr_tail(self, chars: int = 2000) -> str:
        """The last `chars` characters the runner wrote to stderr."""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-chars:]

    def request(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Send one raw request, return its raw record (see `peers.blazepose`)."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        try:
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            code = self._proc.poll()
            raise BlazePoseError(f"The BlazePose runner exited (status {code}) on {request!r}; "
                                 f"its stderr ends:\n{self._stderr_tail()}")
        return json.loads(line)

    def predict(self, image: Path | str, box: Sequence[float] | None = None
                ) -> BlazePosePrediction:
        """BlazePose on an image file, optionally cropped to box [x0, y0, x1, y1] first;
        coordinates always refer to the full image."""
        record = self.request({"image": str(Path(image).resolve()),
                               "box": None if box is None else [float(v) for v in box],
                               "complexity": self.complexity})
        return BlazePosePrediction.from_record(record)

    def close(self) -> None:
        """Stop the runner (EOF on its stdin) and wait for it."""
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._stderr.close()

    def __enter__(self) -> BlazePoseClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def predict_images(images: Sequence[Path | str], complexity: int = 1,
                   boxes: Sequence[Sequence[float] | None] | None = None,
                   venv: Path | str | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BlazePose on many images in one runner: (N, 17, 2) px, (N, 17, 3) mm pelvis-relative,
    (N, 17) mask (all False, with NaN coordinates, where no person was found)."""
    if boxes is not None and len(boxes) != len(images):
        raise ValueError(f"Got {len(boxes)} boxes for {len(images)} images; give one per image "
                         "(None for the whole image)")
    with BlazePoseClient(complexity, venv) as client:
        preds = [client.predict(image, None if boxes is None else boxes[i])
                 for i, image in enumerate(images)]
    joints2d = np.empty((len(preds), NUM_JOINTS, 2))
    joints3d = np.empty((len(preds), NUM_JOINTS, 3))
    mask = np.empty((len(preds), NUM_JOINTS), dtype=bool)
    for i, p in enumerate(preds):
        joints2d[i], joints3d[i], mask[i] = p.joints2d, p.joints3d, p.mask
    return joints2d, joints3d, mask
