"""Score MediaPipe BlazePose on a dataset of ours, as `margipose-eval` scores our models.

    python -m peers.eval_blazepose --dataset synthetic-test --data-root build --complexity 1 2 \\
        --json results/blazepose_synthetic_test.json

Each sample's image goes to BlazePose cropped to the sample's reference box (the box our
evaluation crops too). Its world landmarks (mm, hip-centred, camera-aligned axes) mapped to our
17 joints (`peers.blazepose_mapping`) are compared with the ground truth made root-relative at
the pelvis, on the 14 evaluation joints: MPJPE, PCK@150 and AUC, unaligned and after a
similarity Procrustes fit on all 17 joints (`training.metrics.score_poses`). BlazePose's hip
and head definitions differ from ours, so its aligned figures are the fairer comparison. Samples
where BlazePose finds nobody are counted and left out of the means (its scores are therefore
on an easier subset when the detection rate is below 1).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from peers.common import NAMES, blazepose_on_boxes, dataset_parser, write_json
from posecontract.skeleton import EVAL_14, NUM_JOINTS, ROOT
from training.metrics import score_poses


def predict(source, complexity: int, limit: int | None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[float]]:
    """BlazePose at `complexity` on the first `limit` samples of `source`: root-relative mm
    predictions (N, 17, 3; NaN where nobody was found), ground truths (N, 17, 3), found (N,),
    and the seconds of each call."""
    preds, gts, found, seconds = [], [], [], []
    for sample, pred in blazepose_on_boxes(source, complexity, limit):
        seconds.append(pred.seconds)
        found.append(pred.found)
        preds.append(pred.joints3d if pred.found else np.full((NUM_JOINTS, 3), np.nan))
        gts.append(sample.joints - sample.joints[ROOT])
    return np.asarray(preds), np.asarray(gts), np.asarray(found, dtype=bool), seconds


def score(source, complexity: int, limit: int | None) -> dict[str, Any]:
    """BlazePose at `complexity` over the first `limit` samples of `source`."""
    preds, gts, found, seconds = predict(source, complexity, limit)
    count = len(found)
    scores = (score_poses(preds[found], gts[found], EVAL_14).means() if found.any() else {})
    return {"model": f"blazepose-{NAMES[complexity]}", "samples": count,
            "found": int(found.sum()), "detection_rate": float(found.mean()),
            "median_seconds": float(np.median(seconds)), **scores}


def get_args_parser() -> argparse.ArgumentParser:
    return dataset_parser(__doc__, "synthetic-test", torchscript=False)


def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    from training.data.registry import open_dataset

    source = open_dataset(args.dataset, args.data_root)
    rows = [score(source, c, args.limit) for c in args.complexity]
    for r in rows:
        print(json.dumps(r))
    write_json(args.json, {"dataset": args.dataset, "rows": rows})
    return rows


if __name__ == "__main__":
    main(get_args_parser().parse_args())
