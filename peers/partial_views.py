"""Bodies cut by the frame and hidden joints: our exported model beside BlazePose on the same
crops.

    python -m peers.partial_views --torchscript model_repository/margipose-lite/4/model.onnx \\
        --data-root build --dataset real2d-val --json bench/results/partial_real2d.json

The crops are `training.visibility`'s held-out views (`view_example`: each person of the dataset
whole, cut by an image border, behind an occluder, and in a tight box that the picture goes on
beyond, fixed by `EVAL_SEED`), the 256-pixel
images our model sees. Every model gets exactly those pixels: ours as its input, BlazePose (full
and heavy, MediaPipe in its own venv) as a whole image, which it searches with its own detector.
Scored per view, on the labelled joints (on `real2d-val` the teacher's labels on the whole
frame, before the cut):

- **seen joints**: joints in view; their 2D error in the crop's pixels (mean, and PCK at 5 and
  10 % of the crop side), over the joints the model returned. A BlazePose miss (no person
  found) returns none: its rate is `missed` (people), and its seen joints count as not returned.
- **visibility**: accuracy at 0.5, Brier score and ECE (ten bins) of the in-view probability.
  BlazePose's is its landmarks' `visibility` (for a joint built from several landmarks, the
  smallest of theirs); a miss says 0 for every joint.

BlazePose heavy labelled real2d: on the `full` view its row shows how closely it repeats its own
labels on a crop, a floor, not an accuracy. Cut and occluded views are new to every model.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from peers.blazepose_client import BlazePoseClient
from peers.blazepose_mapping import SOURCES, map_points
from peers.common import load_ours, open_source, write_json
from training.data.transforms import crop_pixels
from training.visibility import (
    EVAL_SEED,
    VIEWS,
    module_runner,
    predict,
    reliability,
    view_example,
)

PCK_FRACTIONS = (0.05, 0.10)


def score(examples, coords: np.ndarray, returned: np.ndarray,
          visibility: np.ndarray | None) -> dict[str, Any]:
    """The view's row: seen-joint 2D errors (crop pixels) and visibility reliability.

    coords (N, 17, 2) crop pixels; returned (N, 17) bool: the model gave the joint."""
    labelled = np.stack([e.labelled.numpy() for e in examples])
    visible = np.stack([e.visible.numpy() for e in examples])
    target = np.stack([crop_pixels(e.target.double().numpy(), e.crop.size) for e in examples])
    seen = labelled & visible
    got = seen & returned
    err = np.linalg.norm(coords - target, axis=-1)[got]
    side = examples[0].crop.size
    row: dict[str, Any] = {"people": len(examples), "seen_joints": int(seen.sum()),
                           "seen_returned": float(got.sum() / max(seen.sum(), 1)),
                           "error_px_mean": float(err.mean()) if len(err) else None}
    for f in PCK_FRACTIONS:
        row[f"pck_{round(100 * f)}"] = float((err < f * side).sum() / max(seen.sum(), 1))
    if visibility is not None:
        row["visibility"] = reliability(visibility[labelled], visible[labelled])
    return row


def ours(examples, torchscript: Path) -> dict[str, Any]:
    module, label = load_ours(torchscript)
    pred = predict(module_runner(module), examples)
    coords = np.stack([crop_pixels(c, e.crop.size) for c, e in zip(pred.coords, examples,
                                                                     strict=True)])
    returned = np.ones(coords.shape[:2], dtype=bool)
    return {"model": label, **score(examples, coords, returned, pred.visibility)}


def blazepose(examples, complexity: int) -> dict[str, Any]:
    names = {1: "BlazePose full", 2: "BlazePose heavy", 0: "BlazePose lite"}
    n = len(examples)
    coords = np.zeros((n, 17, 2))
    visibility = np.zeros((n, 17))
    returned = np.zeros((n, 17), dtype=bool)
    missed = 0
    with tempfile.TemporaryDirectory() as tmp, BlazePoseClient(complexity) as client:
        for i, e in enumerate(examples):
            path = Path(tmp) / f"{i}.png"
            Image.fromarray(e.image.permute(1, 2, 0).numpy()).save(path)
            p = client.predict(path, None)
            if not p.found:
                missed += 1
                continue
            coords[i] = map_points(p.landmarks2d)
            for j, sources in SOURCES.items():
                visibility[i, j] = min(p.visibility[list(sources)])
            returned[i] = True
    row = score(examples, coords, returned, visibility)
    return {"model": names[complexity], "missed": missed / n, **row}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--torchscript", type=Path, required=True, help="our model.pt or model.onnx")
    p.add_argument("--data-root", type=Path, required=True)
    p.add_argument("--dataset", default="real2d-val")
    p.add_argument("--limit", type=int, help="only the first N people")
    p.add_argument("--complexity", type=int, nargs="*", default=[1, 2],
                   help="BlazePose complexities to run (1 full, 2 heavy; none: ours only)")
    p.add_argument("--json", type=Path)
    return p


def markdown(result: dict[str, Any]) -> str:
    lines = ["| view | model | seen px | PCK@5 % | PCK@10 % | returned | vis. acc. | ECE |",
             "|---|---|---|---|---|---|---|---|"]
    for view, rows in result["views"].items():
        for r in rows:
            vis = r.get("visibility")
            px = "n/a" if r["error_px_mean"] is None else f"{r['error_px_mean']:.1f}"
            scored = f"{100 * vis['accuracy']:.1f} | {vis['ece']:.3f}" if vis else "n/a | n/a"
            lines.append(f"| {view} | {r['model']} | {px} | {100 * r['pck_5']:.1f} | "
                         f"{100 * r['pck_10']:.1f} | {100 * r['seen_returned']:.0f} % | "
                         f"{scored} |")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> dict[str, Any]:
    source = open_source(args)
    count = len(source) if args.limit is None else min(args.limit, len(source))
    result: dict[str, Any] = {"dataset": args.dataset, "people": count, "seed": EVAL_SEED,
                              "torchscript": str(args.torchscript), "views": {}}
    for view in VIEWS:
        examples = [view_example(source[i], view, EVAL_SEED, i) for i in range(count)]
        rows = [ours(examples, args.torchscript)]
        rows += [blazepose(examples, c) for c in args.complexity]
        result["views"][view] = rows
    write_json(args.json, result)
    print(markdown(result))
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
