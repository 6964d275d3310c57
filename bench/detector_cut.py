"""People cut by the picture's edge, found by the person detector: which crop serves them best.

    python -m bench.detector_cut --json bench/results/detector/cut_val.json

From every teacher-labelled person of the real2d val split (`training.data.real2d`: Pose2Sim
camera 4 and the Sports2D frames around the committed photos, held out), a waist-up picture is
cut from the frame: everything below the hips' level minus a tenth of the person's height goes,
and the sides are trimmed to the person's width plus half their height each side, so that the
hips, the detector's mid-hip keypoint, lie outside the picture as in a portrait. Two
`PoseService`s with the detector (margipose-lite and the detector on ONNX Runtime, re-framing
on) answer each picture without boxes:

- `clip`: a detection whose mid-hip is outside the picture is boxed by the part of its
  full-body square inside the picture (`posecontract.detection.detection_box`, the default);
- `circle`: the crop from the full-body circle, as for a whole body.

The person answered nearest to the teacher's neck is compared with the teacher's joints that
are in the cut picture and visible: mean pixel error over the teacher person's height (the
longer side of its visible joints' box in the frame), per person, and found (someone answered
within half that height of the neck).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.report import describe_machine, machine_info, markdown_table, write_json
from posecontract.skeleton import JOINT_NAMES
from service.backends import make_backend
from service.core import PoseService
from service.detector import make_detector
from service.options import PredictOptions
from service.settings import Settings

NECK = JOINT_NAMES.index("neck")
HIPS = [JOINT_NAMES.index("right_hip"), JOINT_NAMES.index("left_hip")]


def cut_pictures(root: Path, split: str) -> list[dict[str, Any]]:
    """Waist-up pictures cut from the split's frames, with the teacher's joints in them."""
    out = []
    with open(root / "real2d" / "labels.jsonl") as f:
        for line in f:
            r = json.loads(line)
            if r["split"] != split:
                continue
            joints, mask = np.array(r["joints"]), np.array(r["mask"], bool)
            if not mask[HIPS].all() or not mask[NECK]:
                continue
            seen = joints[mask]
            height = float((seen.max(0) - seen.min(0)).max())
            bottom = float(joints[HIPS, 1].min() - 0.1 * height)
            left = max(0.0, float(seen[:, 0].min() - 0.5 * height))
            right = min(float(r["width"]), float(seen[:, 0].max() + 0.5 * height))
            top = max(0.0, float(seen[:, 1].min() - 0.3 * height))
            if bottom - top < 32 or right - left < 32:
                continue
            box = tuple(int(round(v)) for v in (left, top, right, bottom))
            inside = mask & (joints[:, 0] >= box[0]) & (joints[:, 0] < box[2]) & \
                (joints[:, 1] >= box[1]) & (joints[:, 1] < box[3])
            if inside.sum() < 3:
                continue
            out.append({"image": r["image"], "box": box, "joints": joints - box[:2],
                        "inside": inside, "height": height})
    return out


def _jpeg(root: Path, item: dict[str, Any]) -> bytes:
    image = Image.open(root / "real2d" / item["image"]).convert("RGB").crop(item["box"])
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


async def measure(root: Path, repository: Path, split: str, limit: int | None
                  ) -> dict[str, list]:
    items = cut_pictures(root, split)[:limit]
    services = {}
    for rule in ("clip", "circle"):
        settings = Settings(model_repository=repository, runtime="onnxruntime",
                            max_batch_wait_ms=0)
        detector = make_detector(settings)
        assert detector is not None, f"no person detector in {repository}"
        detector.clip_cut = rule == "clip"
        services[rule] = PoseService(settings, make_backend(settings), detector=detector)
        await services[rule].start()
    results: dict[str, list] = {rule: [] for rule in services}
    try:
        for item in items:
            data = _jpeg(root, item)
            for rule, service in services.items():
                result = await service.predict(data, "image/jpeg", PredictOptions())
                neck = item["joints"][NECK]
                best, best_d = None, 0.5 * item["height"]
                for p in result.persons:
                    d = float(np.linalg.norm(p.pose.pixels[NECK] - neck))
                    if d < best_d:
                        best, best_d = p, d
                if best is None:
                    results[rule].append(None)
                    continue
                err = np.linalg.norm(best.pose.pixels - item["joints"], axis=1)[item["inside"]]
                results[rule].append(float(err.mean() / item["height"]))
    finally:
        for service in services.values():
            await service.stop()
    return results


def main() -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path("build"))
    p.add_argument("--repository", type=Path, default=Path("model_repository"))
    p.add_argument("--split", default="val")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    results = asyncio.run(measure(args.root, args.repository, args.split, args.limit))
    n = len(next(iter(results.values())))
    both = [i for i in range(n) if all(results[r][i] is not None for r in results)]
    rows, summary = [], {}
    rng = np.random.default_rng(0)
    for rule, errs in results.items():
        found = sum(e is not None for e in errs)
        paired = np.array([errs[i] for i in both]) * 100
        summary[rule] = {"pictures": n, "found": found,
                         "error_pct_of_height_mean": float(paired.mean()),
                         "error_pct_of_height_median": float(np.median(paired))}
        rows.append([rule, f"{found}/{n}", f"{paired.mean():.2f}", f"{np.median(paired):.2f}"])
    a = np.array([results["clip"][i] for i in both]) * 100
    b = np.array([results["circle"][i] for i in both]) * 100
    boots = [float((a[s] - b[s]).mean()) for s in
             (rng.integers(0, len(a), len(a)) for _ in range(2000))]
    summary["clip_minus_circle"] = {"paired": len(both), "mean": float((a - b).mean()),
                                    "ci95": [float(np.percentile(boots, 2.5)),
                                             float(np.percentile(boots, 97.5))]}
    info = machine_info()
    print(describe_machine(info))
    print(markdown_table(["crop rule", "found", "error % of height, mean (paired)",
                          "median"], rows, text_columns=2))
    print(json.dumps(summary["clip_minus_circle"]))
    payload = {"machine": info, "split": args.split, "results": summary, "raw": results}
    if args.json:
        write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
