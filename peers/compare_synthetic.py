"""Our exported model against MediaPipe BlazePose (full, heavy) on the same held-out samples.

    python -m peers.compare_synthetic --torchscript model_repository/margipose-lite/1/model.pt \\
        --dataset synthetic-test --data-root build --json bench/results/accuracy_synthetic.json

Both see each sample cropped to its reference box (no detector; the same box for both). Ours is
scored as `margipose-eval` scores it (the dataset's protocol: for synthetic-test the
MPI-INF-3DHP one, root depth from the 920 mm knee-neck prior); BlazePose's world landmarks
(hip-centred, the metric scale of an average body) as `peers.eval_blazepose` does. Both are
root-relative at the pelvis and scored on the 14 evaluation joints, unaligned and after a
similarity Procrustes fit. Where BlazePose finds nobody, the sample is left out of its means, so
each BlazePose row has a twin: our model on exactly the samples BlazePose answered.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from peers.common import NAMES, dataset_parser, load_ours, open_source, write_rows
from peers.eval_blazepose import predict
from posecontract.skeleton import EVAL_14
from training.evaluate import crop_params, model_predictor, protocol_for, run_predictions
from training.metrics import score_poses

METRICS = ("mpjpe", "pa_mpjpe", "pck", "pa_pck", "auc", "pa_auc")


def _row(model: str, subset: str, pred: np.ndarray, gt: np.ndarray, **extra: Any
         ) -> dict[str, Any]:
    means = score_poses(pred, gt, EVAL_14).means()
    return {"model": model, "subset": subset, "samples": len(pred),
            **{m: float(means[m]) for m in METRICS}, **extra}


def compare(source, torchscript: Path, complexities: list[int], limit: int | None
            ) -> list[dict[str, Any]]:
    module, label = load_ours(torchscript)
    ours = run_predictions(source, model_predictor(module, torch.device("cpu")),
                           protocol_for(source.name), crop_params(False), batch_size=32,
                           limit=limit)
    rows = [_row(label, "all", ours.pred, ours.gt)]
    for complexity in complexities:
        preds, gts, found, seconds = predict(source, complexity, limit)
        if not np.allclose(gts, ours.gt, atol=1e-6):
            raise RuntimeError("BlazePose and our model were scored on different ground truths")
        name = f"blazepose-{NAMES[complexity]}"
        if found.any():
            rows.append(_row(name, f"found by {name}", preds[found], gts[found],
                             detection_rate=float(found.mean()),
                             median_seconds=float(np.median(seconds))))
            rows.append(_row(label, f"found by {name}", ours.pred[found],
                             ours.gt[found]))
        else:
            rows.append({"model": name, "subset": "none found", "samples": 0,
                         "detection_rate": 0.0})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    head = ("| model | samples | subset | MPJPE | PA-MPJPE | PCK@150 | PA-PCK@150 | AUC | PA-AUC |"
            "\n| :-- | --: | :-- | --: | --: | --: | --: | --: | --: |")
    lines = [head]
    for r in rows:
        if "mpjpe" not in r:
            lines.append(f"| {r['model']} | 0 | {r['subset']} | | | | | | |")
            continue
        lines.append(
            f"| {r['model']} | {r['samples']} | {r['subset']} | {r['mpjpe']:.1f} | "
            f"{r['pa_mpjpe']:.1f} | {100 * r['pck']:.1f} | {100 * r['pa_pck']:.1f} | "
            f"{100 * r['auc']:.1f} | {100 * r['pa_auc']:.1f} |")
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    return dataset_parser(__doc__, "synthetic-test", torchscript=True)


def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = compare(open_source(args), args.torchscript, args.complexity, args.limit)
    print(markdown(rows))
    write_rows(args, rows)
    return rows


if __name__ == "__main__":
    main(get_args_parser().parse_args())
