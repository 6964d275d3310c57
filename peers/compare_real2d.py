"""2D agreement with the teacher on held-out real frames: our exported model and BlazePose full.

    python -m peers.compare_real2d --torchscript model_repository/margipose-lite/1/model.pt \\
        --data-root build --json bench/results/accuracy_real2d.json

There is no real 3D ground truth here. What can be measured on real people is 2D: on
`real2d-val` (frames no training step saw: Pose2Sim camera 4 and the Sports2D frames around the
committed photos, `training/data/real2d.py`) each model sees the person's reference box and its
joints are compared, in the full image's pixels, with the BlazePose-heavy labels. Errors are
divided by the person's size (the larger side of the labelled joints' extent, about their
height): mean error, and PCK at 0.05 and 0.1 of it, over the labelled joints. BlazePose heavy is
the teacher itself: its row shows how closely a rerun on the reference box repeats its own
labels (a floor for the others), not its accuracy.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from peers.common import NAMES, blazepose_on_boxes, dataset_parser, write_json
from training.camera import ndc_to_camera
from training.data.real2d import BOX_PER_EXTENT
from training.evaluate import (
    Predictor,
    crop_jobs,
    crop_params,
    model_predictor,
    predict_batch,
)
from training.skeleton import ROOT

THRESHOLDS = (0.05, 0.1)


def scores(pred: np.ndarray, label: np.ndarray, mask: np.ndarray, size: np.ndarray
           ) -> dict[str, float]:
    """Mean error / size and PCK over labelled joints; pred, label (N, 17, 2), mask (N, 17),
    size (N,)."""
    err = np.linalg.norm(pred - label, axis=-1) / size[:, None]
    err = err[mask]
    return {"mean_error": float(err.mean()),
            **{f"pck@{t}": float((err <= t).mean()) for t in THRESHOLDS}}


def ours_2d(source, predictor: Predictor, limit: int | None) -> np.ndarray:
    """A predictor's joints in full-image pixels (N, 17, 2) from each sample's reference box."""
    count = len(source) if limit is None else min(limit, len(source))
    out = []
    for i in range(count):
        sample = source[i]
        (job,) = crop_jobs(i, sample, crop_params(False))
        (ndc,) = predict_batch(predictor, [job], 1)
        # Any depth projects back to the same pixels; use the sample's own reference depth.
        camera_mm = ndc_to_camera(ndc, job.crop, float(sample.joints[ROOT, 2]))
        out.append(sample.camera.project(camera_mm))
    return np.asarray(out)


def blazepose_2d(source, complexity: int, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """BlazePose's joints in pixels (N, 17, 2; NaN where nobody was found) and found (N,)."""
    preds, found = [], []
    for sample, pred in blazepose_on_boxes(source, complexity, limit, suffix=".jpg"):
        found.append(pred.found)
        preds.append(pred.joints2d if pred.found else np.full((len(sample.mask), 2), np.nan))
    return np.asarray(preds), np.asarray(found, dtype=bool)


def compare(source, torchscript: Path, complexities: list[int], limit: int | None
            ) -> list[dict[str, Any]]:
    count = len(source) if limit is None else min(limit, len(source))
    samples = [source[i] for i in range(count)]
    labels = np.asarray([s.camera.project(s.joints) for s in samples])
    masks = np.asarray([s.mask for s in samples])
    sizes = np.asarray([s.box.side / BOX_PER_EXTENT for s in samples])
    module = torch.jit.load(str(torchscript), map_location="cpu").eval()
    ours = ours_2d(source, model_predictor(module, torch.device("cpu")), limit)
    rows = [{"model": "margipose-lite (ours)", "subset": "all", "samples": count,
             **scores(ours, labels, masks, sizes)}]
    for complexity in complexities:
        preds, found = blazepose_2d(source, complexity, limit)
        name = f"blazepose-{NAMES[complexity]}" + (" (the teacher)" if complexity == 2 else "")
        if found.any():
            rows.append({"model": name, "subset": "found", "samples": int(found.sum()),
                         "detection_rate": float(found.mean()),
                         **scores(preds[found], labels[found], masks[found], sizes[found])})
            rows.append({"model": "margipose-lite (ours)", "subset": f"found by {name}",
                         "samples": int(found.sum()),
                         **scores(ours[found], labels[found], masks[found], sizes[found])})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | samples | subset | mean error / size | PCK@0.05 | PCK@0.1 |",
             "| :-- | --: | :-- | --: | --: | --: |"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['samples']} | {r['subset']} | {r['mean_error']:.3f} "
                     f"| {100 * r['pck@0.05']:.1f} | {100 * r['pck@0.1']:.1f} |")
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    return dataset_parser(__doc__, "real2d-val", torchscript=True)


def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    from training.data.registry import open_dataset

    source = open_dataset(args.dataset, args.data_root)
    rows = compare(source, args.torchscript, args.complexity, args.limit)
    print(markdown(rows))
    write_json(args.json, {"dataset": args.dataset, "torchscript": str(args.torchscript),
                           "rows": rows})
    return rows


if __name__ == "__main__":
    main(get_args_parser().parse_args())
