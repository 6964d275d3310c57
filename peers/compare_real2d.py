"""2D and 3D agreement with the teacher on held-out real frames: our exported model and BlazePose.

    python -m peers.compare_real2d --torchscript model_repository/margipose-lite/1/model.pt \\
        --data-root build --json bench/results/accuracy_real2d.json

There is no real 3D ground truth here; what can be measured on real people is agreement with the
teacher. On `real2d-val` (frames no training step saw: Pose2Sim camera 4 and the Sports2D frames
around the committed photos, `training/data/real2d.py`) each model sees the person's reference
box and is compared with the BlazePose-heavy labels (`peers/teacher2d.py`):

- 2D, in the full image's pixels. Errors are divided by the person's size (the larger side of
  the labelled joints' extent, about their height): mean error, and PCK at 0.05 and 0.1 of it,
  over the labelled joints.
- 3D, against the teacher's world landmarks on our joints (the labels' `joints3d`: mm,
  pelvis-relative, x right, y down, z away). Per person, over the labelled joints only:
  PA-MPJPE (a similarity Procrustes -- rotation, reflection allowed, scale, translation, as
  `training.metrics` -- fitted on those joints) and, for information, MPJPE after root (pelvis)
  alignment; both in mm, averaged over people. BlazePose's prediction is its own world
  landmarks. Ours is the exported model's normalised output denormalised in the crop's camera
  at the root depth that gives a 920 mm knee-neck length (`training.evaluate`'s
  `prepare_for_evaluation`, as margipose-eval's MPI-INF-3DHP protocol: there is no true depth
  here, and the stand-in camera's focal length is a guess), mapped back to the image's camera
  and made pelvis-relative. Denormalisation is linear in the root depth and the crop-to-image
  map is linear, so another root depth would only scale the root-relative skeleton: PA-MPJPE
  does not depend on it; root-aligned MPJPE does, through the person's size. Labels without
  `joints3d` (built before the teacher kept its 3D) still give the 2D table; the 3D part is then
  reported as unavailable.

BlazePose heavy is the teacher itself: its row shows how closely a rerun on the reference box
repeats its own labels (a floor for the others), not its accuracy.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from peers.common import (
    NAMES,
    blazepose_on_boxes,
    dataset_parser,
    load_ours,
    open_source,
    write_rows,
)
from training.camera import ndc_to_camera
from training.data.real2d import BOX_PER_EXTENT
from training.evaluate import (
    Predictor,
    crop_jobs,
    crop_params,
    model_predictor,
    predict_batch,
    prepare_for_evaluation,
)
from training.metrics import joint_errors, procrustes_align, root_relative
from training.skeleton import NUM_JOINTS, ROOT

THRESHOLDS = (0.05, 0.1)
REBUILD_HINT = "rebuild the labels with `python -m training.data.real2d build` to get joints3d"

Teacher3D = Mapping[tuple[str, int], np.ndarray]  # (image, person) -> joints3d (17, 3) mm


def scores(pred: np.ndarray, label: np.ndarray, mask: np.ndarray, size: np.ndarray
           ) -> dict[str, float]:
    """Mean error / size and PCK over labelled joints; pred, label (N, 17, 2), mask (N, 17),
    size (N,)."""
    err = np.linalg.norm(pred - label, axis=-1) / size[:, None]
    err = err[mask]
    return {"mean_error": float(err.mean()),
            **{f"pck@{t}": float((err <= t).mean()) for t in THRESHOLDS}}


def person_errors_3d(pred: np.ndarray, label: np.ndarray, mask: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Each person's PA-MPJPE and root-aligned MPJPE (mm) over the labelled joints, (N,) each;
    pred, label (N, 17, 3) mm, mask (N, 17). The Procrustes is fitted per person on the
    labelled joints alone."""
    pa, rooted = [], []
    for p, g, m in zip(pred, label, mask, strict=True):
        pa.append(joint_errors(procrustes_align(p[m], g[m]), g[m]).mean())
        rooted.append(joint_errors(root_relative(p, ROOT)[m], root_relative(g, ROOT)[m]).mean())
    return np.asarray(pa, dtype=float), np.asarray(rooted, dtype=float)


def scores_3d(pred: np.ndarray, label: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """`person_errors_3d` averaged over people."""
    pa, rooted = person_errors_3d(pred, label, mask)
    return {"pa_mpjpe": float(np.mean(pa)), "mpjpe": float(np.mean(rooted))}


def references(samples: list, teacher3d: Teacher3D | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What every model is scored against: the labels in pixels (N, 17, 2), the teacher's 3D
    (N, 17, 3; NaN without it), the labelled-joint masks (N, 17) and the person sizes (N,)."""
    labels = np.asarray([s.camera.project(s.joints) for s in samples])
    masks = np.asarray([s.mask for s in samples])
    sizes = np.asarray([s.box.side / BOX_PER_EXTENT for s in samples])
    return labels, teacher_3d_of(samples, teacher3d), masks, sizes


def ours_on_boxes(source, predictor: Predictor, limit: int | None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """A predictor's joints from each sample's reference box: full-image pixels (N, 17, 2) and
    pelvis-relative mm at the knee-neck prior's root depth (N, 17, 3)."""
    count = len(source) if limit is None else min(limit, len(source))
    pixels, rel3d = [], []
    for i in range(count):
        sample = source[i]
        (job,) = crop_jobs(i, sample, crop_params(False))
        (ndc,) = predict_batch(predictor, [job], 1)
        # Any depth projects back to the same pixels; use the sample's own reference depth.
        camera_mm = ndc_to_camera(ndc, job.crop, float(sample.joints[ROOT, 2]))
        pixels.append(sample.camera.project(camera_mm))
        rel3d.append(prepare_for_evaluation(ndc, job.crop, None))
    return np.asarray(pixels), np.asarray(rel3d)


def blazepose_preds(source, complexity: int, limit: int | None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BlazePose's joints in pixels (N, 17, 2), its world landmarks on our joints (N, 17, 3; mm,
    pelvis-relative), both NaN where nobody was found, and found (N,)."""
    preds, preds3d, found = [], [], []
    for sample, pred in blazepose_on_boxes(source, complexity, limit, suffix=".jpg"):
        found.append(pred.found)
        n = len(sample.mask)
        preds.append(pred.joints2d if pred.found else np.full((n, 2), np.nan))
        preds3d.append(pred.joints3d if pred.found else np.full((n, 3), np.nan))
    return np.asarray(preds), np.asarray(preds3d), np.asarray(found, dtype=bool)


def read_teacher_3d(labels: Path) -> dict[tuple[str, int], np.ndarray]:
    """The teacher's joints3d of every labels.jsonl record that has them, by (image, person)."""
    out = {}
    with open(labels) as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                if "joints3d" in record:
                    key = (record["image"], int(record["person"]))
                    out[key] = np.asarray(record["joints3d"], dtype=np.float64)
    return out


def teacher_3d_of(samples: list, teacher3d: Teacher3D | None) -> np.ndarray:
    """The samples' teacher joints3d (N, 17, 3); NaN for people without them."""
    out = np.full((len(samples), NUM_JOINTS, 3), np.nan)
    for i, sample in enumerate(samples):
        joints = (teacher3d or {}).get((sample.meta["image"], int(sample.meta["person"])))
        if joints is not None:
            out[i] = joints
    return out


def compare(source, torchscript: Path, complexities: list[int], limit: int | None,
            teacher3d: Teacher3D | None = None) -> list[dict[str, Any]]:
    """One row per model and subset: 2D scores, and 3D ones (None without teacher 3D)."""
    count = len(source) if limit is None else min(limit, len(source))
    samples = [source[i] for i in range(count)]
    labels, labels3d, masks, sizes = references(samples, teacher3d)
    has3d = np.isfinite(labels3d).all(axis=(1, 2))

    def row(model: str, subset: str, keep: np.ndarray, pixels: np.ndarray, rel3d: np.ndarray,
            **extra: Any) -> dict[str, Any]:
        both = keep & has3d
        if both.any():
            three = scores_3d(rel3d[both], labels3d[both], masks[both])
        else:
            three = {"pa_mpjpe": None, "mpjpe": None}
        return {"model": model, "subset": subset, "samples": int(keep.sum()), **extra,
                **scores(pixels[keep], labels[keep], masks[keep], sizes[keep]),
                "samples_3d": int(both.sum()), **three}

    module, label = load_ours(torchscript)
    ours, ours3d = ours_on_boxes(source, model_predictor(module, torch.device("cpu")), limit)
    everyone = np.ones(count, dtype=bool)
    rows = [row(label, "all", everyone, ours, ours3d)]
    for complexity in complexities:
        preds, preds3d, found = blazepose_preds(source, complexity, limit)
        name = f"blazepose-{NAMES[complexity]}" + (" (the teacher)" if complexity == 2 else "")
        if found.any():
            rows.append(row(name, "found", found, preds, preds3d,
                            detection_rate=float(found.mean())))
            rows.append(row(label, f"found by {name}", found, ours, ours3d))
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | samples | subset | mean error / size | PCK@0.05 | PCK@0.1 |",
             "| :-- | --: | :-- | --: | --: | --: |"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['samples']} | {r['subset']} | {r['mean_error']:.3f} "
                     f"| {100 * r['pck@0.05']:.1f} | {100 * r['pck@0.1']:.1f} |")
    return "\n".join(lines)


def markdown_3d(rows: list[dict[str, Any]]) -> str:
    """The 3D table, or a line saying why there is none."""
    if not any(r["samples_3d"] for r in rows):
        return ("3D agreement with the teacher: unavailable (labels without joints3d; "
                f"{REBUILD_HINT})")
    lines = ["| model | people with teacher 3D | subset | PA-MPJPE mm | MPJPE mm (root-aligned) |",
             "| :-- | --: | :-- | --: | --: |"]
    for r in rows:
        if r["samples_3d"]:
            lines.append(f"| {r['model']} | {r['samples_3d']} | {r['subset']} "
                         f"| {r['pa_mpjpe']:.1f} | {r['mpjpe']:.1f} |")
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    return dataset_parser(__doc__, "real2d-val", torchscript=True)


def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    teacher3d = read_teacher_3d(args.data_root / "real2d" / "labels.jsonl")
    rows = compare(open_source(args), args.torchscript, args.complexity, args.limit, teacher3d)
    print(markdown(rows))
    print()
    print(markdown_3d(rows))
    available = any(r["samples_3d"] for r in rows)
    write_rows(args, rows, teacher_3d={
        "available": available,
        "note": ("PA-MPJPE (similarity Procrustes per person on the labelled joints) and "
                 "root-aligned MPJPE, mm, vs the teacher's world landmarks (joints3d); ours "
                 "at the 920 mm knee-neck prior's root depth" if available else
                 f"labels without joints3d; {REBUILD_HINT}"),
    })
    return rows


if __name__ == "__main__":
    main(get_args_parser().parse_args())
