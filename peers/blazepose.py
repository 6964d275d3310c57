"""Run MediaPipe BlazePose on image files and write JSON lines (runs inside the MediaPipe venv).

    .venv-mediapipe/bin/python -m peers.blazepose --complexity 2 data/photos/astronaut.jpg
    .venv-mediapipe/bin/python -m peers.blazepose --serve < requests.jsonl > records.jsonl

Standalone on purpose: numpy, PIL, mediapipe and `peers.blazepose_mapping` only, never torch or
our packages (their numpy 2 / protobuf 6 pins clash with mediapipe's). `peers.blazepose_client`
drives `--serve` from our main venv.

A request (a `--serve` stdin line) is {"image": path, "box": [x0, y0, x1, y1] or null,
"complexity": 0 | 1 | 2 (lite | full | heavy; default --complexity)}. With a box, BlazePose sees
only that crop of the image (rounded to whole pixels, zero-padded outside the image). One record
per request, one line each:

    image, box, complexity, model, width, height   what ran on what (box as used, or null)
    found        false (with "reason") when BlazePose finds no person
    landmarks    33 x [x, y, z, visibility]: MediaPipe's normalised landmarks, relative to the
                 processed image (the crop when a box is given)
    pixels       33 x [u, v] in the full image's continuous pixel coordinates (pixel i spans
                 [i, i + 1)); u = x * crop width + x0
    world_mm     33 x [X, Y, Z] BlazePose world landmarks in mm: hip-centred, x right, y down,
                 z away from the camera (camera-aligned axes, metric scale of an average body)
    joints       {"pixels": 17 x [u, v], "world_mm": 17 x [X, Y, Z] pelvis-relative,
                 "mask": 17 x bool} in our canonical order (see `peers.blazepose_mapping`)
    seconds      wall time of the BlazePose call
A request that cannot be served (unreadable image, bad box) gets {"image": ..., "error": msg}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

import numpy as np
from PIL import Image

from peers.blazepose_mapping import NUM_LANDMARKS, map_mask, map_points, root_relative

MODELS: dict[int, str] = {0: "lite", 1: "full", 2: "heavy"}


def make_pose(complexity: int) -> Any:
    """A single-image BlazePose estimator (the legacy `mediapipe.solutions.pose` API)."""
    if complexity not in MODELS:
        raise ValueError(f"complexity must be one of {sorted(MODELS)} "
                         f"({', '.join(MODELS.values())}), got {complexity!r}")
    import mediapipe as mp  # imported here so that `--help` and the mapping work without it

    return mp.solutions.pose.Pose(static_image_mode=True, model_complexity=complexity,
                                  enable_segmentation=False, min_detection_confidence=0.5)


def crop_box(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """Round a crop box [x0, y0, x1, y1] to whole pixels; it must overlap the image."""
    if len(box) != 4:
        raise ValueError(f"box must be [x0, y0, x1, y1], got {list(box)}")
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box must have x1 > x0 and y1 > y0, got {list(box)}")
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise ValueError(f"box {list(box)} lies outside the {width}x{height} image")
    return x0, y0, x1, y1


def landmarks_array(landmarks: Any, with_visibility: bool) -> np.ndarray:
    """MediaPipe landmark list -> (33, 4) [x, y, z, visibility] or (33, 3) [x, y, z] floats."""
    rows = [[lm.x, lm.y, lm.z, lm.visibility] if with_visibility else [lm.x, lm.y, lm.z]
            for lm in landmarks.landmark]
    out = np.asarray(rows, dtype=np.float64)
    if out.shape[0] != NUM_LANDMARKS:
        raise RuntimeError(f"BlazePose returned {out.shape[0]} landmarks, expected {NUM_LANDMARKS}")
    return out


def estimate(pose: Any, rgb: np.ndarray, offset: tuple[int, int] = (0, 0)
             ) -> dict[str, Any]:
    """Run BlazePose on an (H, W, 3) uint8 RGB array; `offset` is the crop's corner in the
    full image. Returns the record fields from "found" on (see the module docstring)."""
    start = time.perf_counter()
    result = pose.process(np.ascontiguousarray(rgb))
    seconds = time.perf_counter() - start
    if result.pose_landmarks is None or result.pose_world_landmarks is None:
        return {"found": False, "reason": "no person detected", "seconds": seconds}
    norm = landmarks_array(result.pose_landmarks, with_visibility=True)  # (33, 4)
    world_mm = 1000.0 * landmarks_array(result.pose_world_landmarks, with_visibility=False)
    h, w = rgb.shape[:2]
    pixels = norm[:, :2] * (w, h) + offset  # (33, 2) full-image pixels
    visibility = norm[:, 3]
    return {
        "found": True,
        "landmarks": norm.tolist(),
        "pixels": pixels.tolist(),
        "world_mm": world_mm.tolist(),
        "joints": {
            "pixels": map_points(pixels).tolist(),
            "world_mm": root_relative(map_points(world_mm)).tolist(),
            "mask": map_mask(visibility).tolist(),
        },
        "seconds": seconds,
    }


class Runner:
    """Serves requests with one lazily built estimator per complexity."""

    def __init__(self, default_complexity: int = 1) -> None:
        self.default_complexity = default_complexity
        self._poses: dict[int, Any] = {}

    def pose(self, complexity: int) -> Any:
        """The estimator for `complexity`, built on first use."""
        if complexity not in self._poses:
            self._poses[complexity] = make_pose(complexity)
        return self._poses[complexity]

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """One request -> one record; failures become {"image", "error"} records."""
        path = request.get("image")
        try:
            if not isinstance(path, str):
                raise ValueError(f"request needs an \"image\" path string, got {request!r}")
            complexity = int(request.get("complexity", self.default_complexity))
            pose = self.pose(complexity)
            with Image.open(path) as image:
                image = image.convert("RGB")
            box = request.get("box")
            offset = (0, 0)
            if box is not None:
                box = crop_box(box, image.width, image.height)
                image = image.crop(box)
                offset = (box[0], box[1])
            record: dict[str, Any] = {
                "image": path, "box": None if box is None else list(box),
                "complexity": complexity, "model": MODELS[complexity],
                "width": image.width, "height": image.height,
            }
            record.update(estimate(pose, np.asarray(image), offset))
            return record
        except (OSError, ValueError) as exc:
            return {"image": path, "error": f"{type(exc).__name__}: {exc}"}

    def close(self) -> None:
        """Release the MediaPipe graphs."""
        for pose in self._poses.values():
            pose.close()
        self._poses.clear()


def serve(runner: Runner, requests: Iterable[str], out: TextIO) -> int:
    """Answer JSON-line requests until EOF, one flushed record line each; returns the count."""
    count = 0
    for line in requests:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            record = runner.handle(request) if isinstance(request, dict) else {
                "image": None, "error": f"request must be a JSON object, got {line.strip()!r}"}
        except json.JSONDecodeError as exc:
            record = {"image": None, "error": f"bad JSON request: {exc}"}
        out.write(json.dumps(record) + "\n")
        out.flush()
        count += 1
    return count


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("images", nargs="*", help="image files (ignored with --serve)")
    p.add_argument("--complexity", type=int, default=1, choices=sorted(MODELS),
                   help="0 lite, 1 full, 2 heavy (default 1; a --serve request may override)")
    p.add_argument("--box", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"),
                   help="crop every image to this box first")
    p.add_argument("--serve", action="store_true",
                   help="read JSON-line requests from stdin instead of image arguments")
    p.add_argument("--require-person", action="store_true",
                   help="exit 1 unless every image gives a person (an install check)")
    return p


def main(args: argparse.Namespace) -> int:
    """Run the CLI; the exit status is 1 when a request failed or (--require-person) no
    person was found."""
    runner = Runner(args.complexity)
    try:
        if args.serve:
            serve(runner, sys.stdin, sys.stdout)
            return 0
        status = 0
        for path in args.images:
            record = runner.handle({"image": path, "box": args.box})
            print(json.dumps(record), flush=True)
            if "error" in record or (args.require_person and not record["found"]):
                status = 1
        return status
    finally:
        runner.close()


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
