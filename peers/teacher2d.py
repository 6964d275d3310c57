"""BlazePose as a 2D teacher: find every person in a frame and label their joints (MediaPipe venv).

    .venv-mediapipe/bin/python -m peers.teacher2d --out labels.jsonl IMAGE...

MediaPipe's legacy pose solution follows one person per image. To label every person in a
frame we search, then refine:

1. Search: run BlazePose heavy on the whole frame; paint the found person's box (1.2x its
   landmarks' extent) grey and run again, until nobody more is found or `--max-people`.
2. Refine: run it once more on the original frame cropped to a square of 1.6x each person's
   extent, where the person fills the detector's view (small people gain the most). The refined
   landmarks are kept only when their centre stays inside the search box (the crop may hold
   someone else); otherwise the search landmarks stand.
3. Filter: a person is kept when at least `--min-joints` of our 17 joints are visible
   (visibility >= 0.5; the mask of `peers.blazepose_mapping`) and its mean visibility over the
   limbs is at least `--min-score`.

One JSON line per kept person: image, width, height, person (index in the frame), box
[x0, y0, x1, y1] (the visible joints' extent, full-image pixels), joints (17 x [u, v]), joints3d
(17 x [X, Y, Z]), mask (17 x bool), score (mean limb visibility), refined (bool). joints3d are
BlazePose's world landmarks mapped to our joints as `peers.blazepose` gives them (mm,
pelvis-relative, x right, y down, z away from the camera; metric scale of an average body), from
the same run (search or refine) as the 2D joints; records written before it existed lack the key.
Standalone like `peers.blazepose`: numpy, PIL, mediapipe and the mapping only.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from peers.blazepose import estimate, make_pose
from peers.blazepose_mapping import map_mask, map_points

# BlazePose landmarks of the limbs and hips (shoulders .. ankles) for the person score.
LIMBS = list(range(11, 17)) + list(range(23, 29))


def _extent(pixels: np.ndarray, visible: np.ndarray) -> tuple[float, float, float, float]:
    pts = pixels[visible] if visible.sum() >= 2 else pixels
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


def _scaled(box: tuple[float, float, float, float], factor: float, square: bool = False
            ) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    w, h = (x1 - x0) * factor, (y1 - y0) * factor
    if square:
        w = h = max(w, h, 32.0)
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def _person(record: dict[str, Any]) -> dict[str, Any]:
    norm = np.asarray(record["landmarks"])
    pixels = np.asarray(record["pixels"])
    visibility = norm[:, 3]
    return {"pixels33": pixels, "visibility": visibility,
            "joints": map_points(pixels), "mask": map_mask(visibility),
            # the run's world landmarks, mapped and pelvis-relative (mm) by `estimate`
            "joints3d": np.asarray(record["joints"]["world_mm"], dtype=np.float64),
            "score": float(visibility[LIMBS].mean())}


def label_frame(pose: Any, image: Image.Image, max_people: int = 6) -> list[dict[str, Any]]:
    """Every person BlazePose finds in `image` (RGB), refined; unfiltered."""
    work = image.copy()
    draw = ImageDraw.Draw(work)
    found = []
    for _ in range(max_people):
        record = estimate(pose, np.asarray(work))
        if not record["found"]:
            break
        person = _person(record)
        search_box = _extent(person["pixels33"], person["visibility"] >= 0.5)
        person["search_box"] = search_box
        found.append(person)
        draw.rectangle(_scaled(search_box, 1.2), fill=(128, 128, 128))
    people = []
    for person in found:
        x0, y0, x1, y1 = (int(round(v)) for v in _scaled(person["search_box"], 1.6, square=True))
        crop = image.crop((x0, y0, x1, y1))  # zero-padded outside the frame
        record = estimate(pose, np.asarray(crop), offset=(x0, y0))
        refined = False
        if record["found"]:
            candidate = _person(record)
            centre = candidate["pixels33"][[11, 12, 23, 24]].mean(axis=0)
            sx0, sy0, sx1, sy1 = person["search_box"]
            if sx0 <= centre[0] <= sx1 and sy0 <= centre[1] <= sy1:
                candidate["search_box"] = person["search_box"]
                person, refined = candidate, True
        person["refined"] = refined
        people.append(person)
    return people


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("images", nargs="+")
    p.add_argument("--out", required=True, help="JSON-lines output file")
    p.add_argument("--complexity", type=int, default=2, choices=(0, 1, 2),
                   help="BlazePose model: 0 lite, 1 full, 2 heavy (default, the teacher)")
    p.add_argument("--max-people", type=int, default=6)
    p.add_argument("--min-joints", type=int, default=10,
                   help="visible joints (of 17) a kept person needs")
    p.add_argument("--min-score", type=float, default=0.6,
                   help="mean limb visibility a kept person needs")
    return p


def main(args: argparse.Namespace) -> int:
    pose = make_pose(args.complexity)
    kept = dropped = 0
    try:
        with open(args.out, "w") as out:
            for k, path in enumerate(args.images):
                with Image.open(path) as image:
                    image = image.convert("RGB")
                for i, person in enumerate(label_frame(pose, image, args.max_people)):
                    if person["mask"].sum() < args.min_joints or person["score"] < args.min_score:
                        dropped += 1
                        continue
                    box = _extent(person["joints"], person["mask"])
                    out.write(json.dumps({
                        "image": path, "width": image.width, "height": image.height,
                        "person": i, "box": [round(v, 2) for v in box],
                        "joints": np.round(person["joints"], 2).tolist(),
                        "joints3d": np.round(person["joints3d"], 2).tolist(),
                        "mask": person["mask"].tolist(), "score": round(person["score"], 4),
                        "refined": person["refined"],
                    }) + "\n")
                    kept += 1
                if (k + 1) % 50 == 0:
                    print(f"{k + 1}/{len(args.images)} images, {kept} people kept, "
                          f"{dropped} dropped", file=sys.stderr, flush=True)
    finally:
        pose.close()
    print(f"{len(args.images)} images, {kept} people kept, {dropped} dropped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
