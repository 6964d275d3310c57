"""The person detector measured on real frames: recall, false positives, crops, cost.

    python -m training.detector evaluate --split val --out bench/results/detector/val.json
    python -m training.detector fit-crop --split train      # CROP_FROM_CIRCLE's numbers

Runs the exported detector (`model_repository/person-detector`, the file the service runs)
over every frame of the teacher-labelled real set (`training.data.real2d`) that has a labelled
person, and matches its people to the teacher's: a detection matches the nearest unmatched
teacher person whose pelvis lies within `MATCH_RADIUS` of the teacher crop's side from the
detection's mid-hip keypoint, best score first. Unmatched detections are counted as false
positives against the teacher, who misses people (it labels the people BlazePose heavy found
by a painted-out search, `peers.teacher2d`): `docs/detection.md` shows them.

`fit-crop` measures where the pose model's training crop (centre of the teacher joints' box,
side 1.5 x its longer side: the service's `_crop_around`) lies relative to each matched
detection's full-body circle, on the train split: the medians become
`posecontract.detection.CROP_FROM_CIRCLE`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from posecontract.detection import (
    DETECTOR_NAME,
    Detection,
    detection_crop,
    people_in_windows,
    window_batch,
)
from posecontract.skeleton import JOINT_NAMES

PELVIS = JOINT_NAMES.index("pelvis")
CROP_MARGIN = 1.5      # the service's crop side per joint-box side (service.core.CROP_MARGIN)
MATCH_RADIUS = 0.25    # of the teacher crop's side, between mid-hip keypoint and pelvis


class ExportedDetector:
    """The exported model.pt (or model.onnx) run on images, as the service runs it."""

    def __init__(self, repository: Path, version: str = "1", runtime: str = "torch"):
        folder = Path(repository) / DETECTOR_NAME / version
        if runtime == "torch":
            import torch

            self._torch = torch
            self.model = torch.jit.load(str(folder / "model.pt")).eval()
        else:
            from posecontract.onnx_session import open_session

            self.session = open_session(folder / "model.onnx", 0)
        self.runtime = runtime

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.runtime == "torch":
            with self._torch.inference_mode():
                boxes, scores = self.model(self._torch.from_numpy(batch))
            return boxes.numpy(), scores.numpy()
        boxes, scores = self.session.run(None, {"INPUT__0": batch})
        return boxes, scores

    def detect(self, image: Image.Image, min_score: float, tiles: bool = True,
               max_detections: int | None = None) -> list[Detection]:
        views, batch = window_batch(image, image.width, image.height, tiles=tiles)
        boxes, scores = self.run(batch)
        return people_in_windows(boxes, scores, views, min_score, max_detections)


@dataclass
class Person:
    pelvis: np.ndarray
    centre: np.ndarray   # training crop centre
    side: float          # training crop side


def teacher_people(root: Path, split: str) -> dict[str, list[Person]]:
    """image path -> the teacher's people of `split` in it."""
    out: dict[str, list[Person]] = defaultdict(list)
    with open(root / "real2d" / "labels.jsonl") as f:
        for line in f:
            r = json.loads(line)
            if split != "trainval" and r["split"] != split:
                continue
            joints, mask = np.array(r["joints"]), np.array(r["mask"], bool)
            seen = joints[mask] if mask.sum() >= 3 else joints
            lo, hi = seen.min(0), seen.max(0)
            out[r["image"]].append(Person(joints[PELVIS], (lo + hi) / 2,
                                          CROP_MARGIN * float((hi - lo).max())))
    return dict(out)


def match(found: list[Detection], people: list[Person]) -> list[tuple[Detection, Person | None]]:
    """Each detection (best first) with the teacher person it matches, or None."""
    free = list(range(len(people)))
    out = []
    for d in found:
        best, best_dist = None, MATCH_RADIUS
        for i in free:
            dist = float(np.linalg.norm(d.keypoints[0] - people[i].pelvis)) / people[i].side
            if dist < best_dist:
                best, best_dist = i, dist
        if best is not None:
            free.remove(best)
        out.append((d, None if best is None else people[best]))
    return out


def square_iou(c1, s1: float, c2, s2: float) -> float:
    a = np.r_[np.subtract(c1, s1 / 2), np.add(c1, s1 / 2)]
    b = np.r_[np.subtract(c2, s2 / 2), np.add(c2, s2 / 2)]
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    return float(inter / (s1 * s1 + s2 * s2 - inter))


def run_all(detector: ExportedDetector, root: Path, split: str, tiles: bool, min_score: float
            ) -> list[dict]:
    """Per frame: its teacher people and the detections (min_score applied later)."""
    frames = []
    for image_path, people in sorted(teacher_people(root, split).items()):
        image = Image.open(root / "real2d" / image_path).convert("RGB")
        found = detector.detect(image, min_score, tiles)
        frames.append({"image": image_path, "people": people, "found": found})
    return frames


def summarise(frames: list[dict], min_score: float) -> dict:
    n_people = sum(len(f["people"]) for f in frames)
    hits, false, ious = 0, 0, []
    per_source: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for f in frames:
        found = [d for d in f["found"] if d.score >= min_score]
        source = f["image"].split("/")[1]
        per_source[source][0] += len(f["people"])
        for d, p in match(found, f["people"]):
            if p is None:
                false += 1
                per_source[source][2] += 1
                continue
            hits += 1
            per_source[source][1] += 1
            centre, side = detection_crop(d)
            ious.append(square_iou(centre, side, p.centre, p.side))
    return {"min_score": min_score, "frames": len(frames), "people": n_people,
            "recall": hits / max(n_people, 1), "false_positives": false,
            "false_positives_per_frame": false / max(len(frames), 1),
            "crop_iou_median": float(np.median(ious)) if ious else None,
            "crop_iou_p10": float(np.percentile(ious, 10)) if ious else None,
            "per_source": {k: {"people": v[0], "found": v[1], "false_positives": v[2]}
                           for k, v in sorted(per_source.items())}}


def fit_crop(frames: list[dict], min_score: float) -> dict:
    """Where the training crop lies in each matched detection's circle frame: medians."""
    along, across, side = [], [], []
    for f in frames:
        for d, p in match([d for d in f["found"] if d.score >= min_score], f["people"]):
            if p is None:
                continue
            v = d.keypoints[1] - d.keypoints[0]
            r2 = float(v @ v)
            offset = p.centre - d.keypoints[0]
            along.append(float(offset @ v) / r2)
            across.append(float(offset @ np.array([-v[1], v[0]])) / r2)
            side.append(p.side / np.sqrt(r2))
    return {"matched": len(side), "centre_along": float(np.median(along)),
            "centre_across": float(np.median(across)),
            "side_per_radius": float(np.median(side)),
            "side_per_radius_iqr": [float(np.percentile(side, 25)),
                                    float(np.percentile(side, 75))]}


# Regions of the committed photos with nobody in them (checked by eye): photo, (x0, y0, x1, y1).
EMPTY_REGIONS = (
    ("sports2d_frame000.jpg", (0, 0, 560, 994)),     # left of the man on the box
    ("sports2d_frame075.jpg", (0, 470, 560, 994)),   # the box and the lawn below the man
    ("sports2d_frame225.jpg", (0, 0, 1300, 994)),    # everything left of the man by the tree
)


def empty_images(count: int, seed: int = 0) -> list[tuple[str, Image.Image]]:
    """Pictures of nobody: the synthetic set's procedural backgrounds (noise, gradients, flat
    shapes; `training.synthetic.backgrounds`), at two sizes, and `EMPTY_REGIONS`."""
    from training.synthetic.backgrounds import procedural

    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        w, h = ((640, 480), (1280, 720))[i % 2]
        pixels = np.clip(procedural(rng, w, h) * 255 + 0.5, 0, 255).astype(np.uint8)
        out.append((f"procedural-{i}", Image.fromarray(pixels)))
    photos = Path(__file__).resolve().parents[1] / "data" / "photos"
    for name, box in EMPTY_REGIONS:
        out.append((f"{name}{list(box)}", Image.open(photos / name).convert("RGB").crop(box)))
    return out


def empty(detector: ExportedDetector, count: int, thresholds: list[float]) -> dict:
    """How many people the detector finds where there is nobody."""
    scores = []
    for name, image in empty_images(count):
        found = detector.detect(image, min(thresholds))
        scores.append((name, [round(d.score, 3) for d in found]))
    return {"images": len(scores), "procedural": count, "regions": [n for n, _ in
                                                                    scores[count:]],
            "by_threshold": [{"min_score": t,
                              "images_with_someone": sum(any(s >= t for s in ss)
                                                         for _, ss in scores),
                              "people_found": sum(sum(s >= t for s in ss) for _, ss in scores)}
                             for t in thresholds],
            "regions_scores": dict(scores[count:])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Measure the person detector on real frames.")
    p.add_argument("command", choices=["evaluate", "fit-crop", "empty"])
    p.add_argument("--count", type=int, default=200, help="empty: procedural backgrounds")
    p.add_argument("--root", type=Path, default=Path("build"))
    p.add_argument("--split", default="val", choices=["train", "val", "trainval"])
    p.add_argument("--repository", type=Path, default=Path("model_repository"))
    p.add_argument("--min-scores", type=float, nargs="+", default=[0.3, 0.4, 0.5, 0.6, 0.7])
    p.add_argument("--no-tiles", action="store_true", help="the whole image only")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    detector = ExportedDetector(args.repository)
    if args.command == "empty":
        result = empty(detector, args.count, args.min_scores)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps(result["by_threshold"]), result["regions_scores"])
        return 0
    t = time.perf_counter()
    frames = run_all(detector, args.root, args.split, not args.no_tiles, min(args.min_scores))
    elapsed = time.perf_counter() - t
    if args.command == "fit-crop":
        result = {"split": args.split, "tiles": not args.no_tiles,
                  **fit_crop(frames, 0.5)}
    else:
        result = {"split": args.split, "tiles": not args.no_tiles,
                  "seconds_per_frame": elapsed / max(len(frames), 1),
                  "thresholds": [summarise(frames, s) for s in args.min_scores]}
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text if args.command == "fit-crop" else json.dumps(
        [{k: r[k] for k in ("min_score", "recall", "false_positives", "crop_iou_median")}
         for r in result["thresholds"]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
