"""Evaluate a model on MargiPose's Human3.6M and MPI-INF-3DHP protocols.

Every example is cropped at its reference box (the ground-truth box, as in the reference) with
no augmentation, or, with --multicrop, ten times: {no flip, flip} x centre offsets (0, 0),
(-8, 0), (0, -8), (+8, 0), (0, +8) in source pixels. Each crop's normalised prediction is
denormalised -- at the ground-truth root depth (h36m) or at the root depth that gives a 920 mm
knee-neck length (mpi3d) -- mapped back to the original camera and made root-relative (pelvis);
the crops' skeletons are then averaged in mm. Metrics are computed per example and averaged
over examples, overall and per group:

    h36m   all 17 joints: MPJPE, PA-MPJPE (similarity Procrustes on all 17); per action
    mpi3d  14 VNect joints: PCK@150, AUC, MPJPE, unaligned and aligned; per sequence, activity

    margipose-eval --checkpoint runs/h36m/last.pt --dataset h36m-test --data-root /data/h36m
    margipose-eval --torchscript repo/margipose/1/model.pt --dataset mpi3d-test \\
        --data-root /data/mpi3d --multicrop --out results.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from posecontract.crop_image import render_crop
from posecontract.geometry import KNEE_NECK_MM, Crop, root_depth_from_scale
from posecontract.layout import INPUT_SIZE
from training.camera import CropParams, augmented_crop, ndc_to_camera
from training.data.sample import Sample, SampleSource
from training.metrics import AUC_THRESHOLDS_MM, PCK_THRESHOLD_MM, root_relative, score_poses
from training.skeleton import EVAL_14, NUM_JOINTS, ROOT

# Human3.6M action ids (h36m-fetch `action`); id 1 ("_ALL") is not a test action.
H36M_ACTIONS: dict[int, str] = {
    2: "Directions", 3: "Discussion", 4: "Eating", 5: "Greeting", 6: "Phoning", 7: "Posing",
    8: "Purchases", 9: "Sitting", 10: "SittingDown", 11: "Smoking", 12: "TakingPhoto",
    13: "Waiting", 14: "Walking", 15: "WalkingDog", 16: "WalkingTogether",
}
# MPI-INF-3DHP test activity ids (annot_data.mat `activity_annotation`); the dataset's own
# evaluation script abbreviates them (Stand/Walk, Exercise, Sit on Chair, Reach/Crouch, ...).
MPI3DHP_ACTIVITIES: dict[int, str] = {
    1: "Standing/Walking", 2: "Exercising", 3: "Sitting", 4: "Reaching/Crouching",
    5: "On the Floor", 6: "Sports", 7: "Miscellaneous",
}
# Ten-crop centre offsets in source pixels, each used without and with a horizontal flip.
MULTICROP_OFFSETS_PX: tuple[tuple[float, float], ...] = (
    (0.0, 0.0), (-8.0, 0.0), (0.0, -8.0), (8.0, 0.0), (0.0, 8.0),
)
UNKNOWN = "(unknown)"
LOG_EVERY = 50  # progress line every this many loader steps

METRIC_HEADERS = {
    "mpjpe": "MPJPE mm", "pa_mpjpe": "PA-MPJPE mm", "pck": "PCK@150 %", "auc": "AUC %",
    "pa_pck": "PA-PCK@150 %", "pa_auc": "PA-AUC %",
}
_PERCENT = {"pck", "auc", "pa_pck", "pa_auc"}


@dataclass(frozen=True)
class Protocol:
    """How a dataset is scored: root depth, joint subset, metrics and the groupings tabled."""

    name: str
    known_depth: bool  # denormalise at the GT root depth (else the knee-neck prior)
    joints: tuple[int, ...] | None  # scored subset; None is all 17
    metrics: tuple[str, ...]  # fields of training.metrics.PoseScores
    groupings: tuple[str, ...]  # keys of GROUPINGS


PROTOCOLS: dict[str, Protocol] = {
    "h36m": Protocol("h36m", True, None, ("mpjpe", "pa_mpjpe"), ("action",)),
    "mpi3d": Protocol("mpi3d", False, EVAL_14,
                      ("pck", "auc", "mpjpe", "pa_pck", "pa_auc", "pa_mpjpe"),
                      ("sequence", "activity")),
}


def protocol_for(spec: str) -> Protocol:
    """The reference's choice: GT root depth for `h36m-*` specs, the skeleton prior otherwise."""
    return PROTOCOLS["h36m" if spec.startswith("h36m") else "mpi3d"]


# ----------------------------------------------------------------------------- groups


def _numbered(value: Any, prefix: str) -> str:
    """An integer id as `prefix<id>`; anything else as its string."""
    if isinstance(value, int | np.integer):
        return f"{prefix}{int(value)}"
    return str(value)


def _named(value: Any, names: Mapping[int, str], kind: str) -> str:
    """An id (int or digit string) looked up in `names`; other strings kept as they are."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int | np.integer):
        return names.get(int(value), f"{kind} {int(value)}")
    return str(value)


def action_label(meta: Mapping[str, Any]) -> str:
    """Human3.6M action name, from "action_id" if given, else "action" (a name or an id);
    subactions ("Walking-2", h36m-fetch folder names) are pooled."""
    action = meta.get("action_id", meta.get("action"))
    if action is None:
        return UNKNOWN
    name = _named(action, H36M_ACTIONS, "action")
    base, sep, tail = name.rpartition("-")
    return base if sep and tail.isdigit() else name


def activity_label(meta: Mapping[str, Any]) -> str:
    """MPI-INF-3DHP activity name, from "activity_id" if given, else "activity"."""
    activity = meta.get("activity_id", meta.get("activity"))
    return UNKNOWN if activity is None else _named(activity, MPI3DHP_ACTIVITIES, "activity")


def sequence_label(meta: Mapping[str, Any]) -> str:
    """The sequence's label: a string "sequence" is one already (the MPI-INF-3DHP reader's
    "TS1".."TS6", "S1/Seq2"); a numbered one becomes "S<subject>/Seq<sequence>"."""
    subject, sequence = meta.get("subject"), meta.get("sequence")
    if isinstance(sequence, str):
        return sequence
    parts = [_numbered(v, p) for v, p in ((subject, "S"), (sequence, "Seq")) if v is not None]
    return "/".join(parts) if parts else UNKNOWN


GROUPINGS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "action": action_label, "activity": activity_label, "sequence": sequence_label,
}
_GROUP_ORDER: dict[str, tuple[str, ...]] = {
    "action": tuple(H36M_ACTIONS.values()), "activity": tuple(MPI3DHP_ACTIVITIES.values()),
}


# ----------------------------------------------------------------------------- crops


def ten_crop_params() -> tuple[CropParams, ...]:
    """The ten test-time crops: {no flip, flip} x the five centre offsets, no rotation/scale."""
    return tuple(CropParams(jitter=offset, flip=flip)
                 for flip in (False, True) for offset in MULTICROP_OFFSETS_PX)


def crop_params(multicrop: bool) -> tuple[CropParams, ...]:
    """The crops of one example: the reference box alone, or the ten crops."""
    return ten_crop_params() if multicrop else (CropParams(),)


@dataclass(frozen=True, eq=False)
class CropJob:
    """One crop of one example, ready to predict on."""

    index: int  # of the example in its source
    sample: Sample
    params: CropParams
    crop: Crop
    image: np.ndarray  # (256, 256, 3) uint8 RGB


# A predictor maps crops to normalised coordinates (len(jobs), 17, 3). A model looks only at
# job.image; tests inject oracles that read the ground truth instead.
Predictor = Callable[[Sequence[CropJob]], np.ndarray]
SourceFactory = Callable[[str, Path | None], SampleSource]


def crop_jobs(index: int, sample: Sample, params: Sequence[CropParams],
              size: int = INPUT_SIZE) -> list[CropJob]:
    """Cut and render the crops `params` of `sample`'s reference box."""
    jobs = []
    for p in params:
        crop = augmented_crop(sample.camera, sample.box, p, size)
        jobs.append(CropJob(index, sample, p, crop, render_crop(sample.image, crop)))
    return jobs


def predict_batch(predictor: Predictor, jobs: Sequence[CropJob], batch_size: int) -> np.ndarray:
    """Run `predictor` over `jobs` in batches of at most `batch_size`: (len(jobs), 17, 3)."""
    if batch_size < 1:
        raise ValueError(f"Batch size must be at least 1, got {batch_size}")
    out = []
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        ndc = np.asarray(predictor(chunk), dtype=np.float64)
        if ndc.shape != (len(chunk), NUM_JOINTS, 3):
            raise ValueError(f"A predictor must return ({len(chunk)}, {NUM_JOINTS}, 3) "
                             f"normalised coordinates for {len(chunk)} crops, got {ndc.shape}")
        out.append(ndc)
    return np.concatenate(out)


def model_predictor(model: Callable[[torch.Tensor], Any], device: torch.device | str
                    ) -> Predictor:
    """Wrap a model taking uint8 images (B, 3, 256, 256) whose (first) output is the
    normalised coordinates (B, 17, 3): training.export.ServingModel or its TorchScript."""

    def predict(jobs: Sequence[CropJob]) -> np.ndarray:
        images = torch.from_numpy(np.stack([job.image for job in jobs]))  # (B, H, W, 3)
        images = images.permute(0, 3, 1, 2).contiguous().to(device)
        with torch.inference_mode():
            out = model(images)
        coords = out[0] if isinstance(out, tuple | list) else out
        return coords.detach().to("cpu", torch.float64).numpy()

    return predict


# ----------------------------------------------------------------------------- protocol


def prepare_for_evaluation(ndc: np.ndarray, crop: Crop, root_depth: float | None) -> np.ndarray:
    """Normalised prediction (17, 3) in `crop` -> root-relative mm in the original camera.

    `root_depth` is the GT root depth (mm) to denormalise at; None infers it from the
    920 mm knee-neck prior, measured on the skeleton mapped back to the original camera.
    """
    if root_depth is None:
        root_depth = float(root_depth_from_scale(ndc, crop))
    return root_relative(ndc_to_camera(ndc, crop, root_depth), ROOT)


def ground_truth(sample: Sample) -> np.ndarray:
    """The sample's joints, root-relative mm (17, 3)."""
    return root_relative(sample.joints, ROOT)


def combine_crops(ndcs: np.ndarray, jobs: Sequence[CropJob], protocol: Protocol) -> np.ndarray:
    """Average the root-relative mm skeletons of one example's crops: (C, 17, 3) -> (17, 3)."""
    skeletons = []
    for ndc, job in zip(ndcs, jobs, strict=True):
        depth = float(job.sample.joints[ROOT, 2]) if protocol.known_depth else None
        skeletons.append(prepare_for_evaluation(ndc, job.crop, depth))
    return np.mean(skeletons, axis=0)


@dataclass(frozen=True, eq=False)
class Predictions:
    """Root-relative mm skeletons of N evaluated examples, with their provenance."""

    pred: np.ndarray  # (N, 17, 3)
    gt: np.ndarray  # (N, 17, 3)
    meta: list[dict[str, Any]]


class _CropDataset(Dataset):
    """The first `count` examples of a source as lists of rendered crops (for DataLoader)."""

    def __init__(self, source: SampleSource, params: Sequence[CropParams], count: int):
        self.source, self.params, self.count = source, tuple(params), count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> list[CropJob]:
        return crop_jobs(index, self.source[index], self.params)


def _keep_lists(batch: list[list[CropJob]]) -> list[list[CropJob]]:
    """DataLoader collate: keep each example's crops as they are."""
    return batch


def run_predictions(source: SampleSource, predictor: Predictor, protocol: Protocol,
                    params: Sequence[CropParams], batch_size: int = 1, limit: int | None = None,
                    workers: int = 0, log: Callable[[str], None] | None = None) -> Predictions:
    """Predict every example (or the first `limit`) and bring predictions and GT to mm."""
    if not source.has_depth:
        raise ValueError(f"{source.name} has 2D-only samples; evaluation needs 3D ground truth")
    count = len(source) if limit is None else min(limit, len(source))
    if count < 1:
        raise ValueError(f"Nothing to evaluate: {source.name} has {len(source)} samples and "
                         f"the limit is {limit}")
    # Whole examples per step, about batch_size crops (at least one example).
    loader = DataLoader(_CropDataset(source, params, count), collate_fn=_keep_lists,
                        batch_size=max(1, batch_size // len(params)), num_workers=workers)
    preds, gts, metas = [], [], []
    for step, examples in enumerate(loader, 1):
        jobs = [job for crops in examples for job in crops]
        ndcs = predict_batch(predictor, jobs, batch_size).reshape(len(examples), len(params),
                                                                  NUM_JOINTS, 3)
        for crops, ndc in zip(examples, ndcs, strict=True):
            sample = crops[0].sample
            preds.append(combine_crops(ndc, crops, protocol))
            gts.append(ground_truth(sample))
            metas.append(dict(sample.meta))
        if log is not None and (step % LOG_EVERY == 0 or len(preds) == count):
            log(f"evaluated {len(preds)}/{count}")
    return Predictions(np.stack(preds), np.stack(gts), metas)


def _natural_key(label: str) -> list[Any]:
    """Sort key ordering "S2" before "S10"."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", label)]


def aggregate(values: Mapping[str, np.ndarray], labels: Sequence[str],
              order: Sequence[str] = ()) -> dict[str, dict[str, float]]:
    """Mean of every per-example metric (N,) over the examples of each label, plus "count".

    Groups come in `order` first, then the remaining labels in natural order.
    """
    labels = list(labels)
    for name, v in values.items():
        if np.shape(v) != (len(labels),):
            raise ValueError(f"Metric {name} has shape {np.shape(v)}; expected ({len(labels)},) "
                             "to match the labels")
    present = set(labels)
    ranked = [g for g in order if g in present]
    ranked += sorted(present - set(ranked), key=_natural_key)
    label_array = np.asarray(labels, dtype=object)
    table = {}
    for group in ranked:
        members = label_array == group
        row = {name: float(np.mean(np.asarray(v)[members])) for name, v in values.items()}
        table[group] = {**row, "count": int(members.sum())}
    return table


def summarise(predictions: Predictions, protocol: Protocol) -> dict[str, Any]:
    """Score the predictions: {"overall": row, "groups": {grouping: {label: row}}}."""
    scores = score_poses(predictions.pred, predictions.gt, protocol.joints)
    values = {m: getattr(scores, m) for m in protocol.metrics}
    n = len(predictions.meta)
    overall = aggregate(values, ["overall"] * n)["overall"]
    groups = {}
    for grouping in protocol.groupings:
        labels = [GROUPINGS[grouping](meta) for meta in predictions.meta]
        groups[grouping] = aggregate(values, labels, _GROUP_ORDER.get(grouping, ()))
    return {"overall": overall, "groups": groups}


def format_table(title: str, rows: Mapping[str, Mapping[str, float]],
                 metrics: Sequence[str]) -> str:
    """Aligned text table: one row per group, mm to 1 decimal, PCK/AUC in percent."""
    header = [title, "n", *(METRIC_HEADERS.get(m, m) for m in metrics)]
    body = []
    for label, row in rows.items():
        cells = [label, str(row["count"])]
        for m in metrics:
            cells.append(f"{100 * row[m]:.1f}" if m in _PERCENT else f"{row[m]:.1f}")
        body.append(cells)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

    rule = "-" * len(line(header))
    return "\n".join([line(header), rule, *(line(c) for c in body)])


def protocol_settings(protocol: Protocol, multicrop: bool) -> dict[str, Any]:
    """The protocol as recorded in the results file."""
    joints = list(protocol.joints) if protocol.joints is not None else list(range(NUM_JOINTS))
    return {
        **asdict(protocol),
        "joints": joints,
        "root_depth": "ground truth" if protocol.known_depth else
                      f"knee-neck prior {KNEE_NECK_MM:g} mm",
        "root_joint": ROOT,
        "crops": [{"offset_px": list(p.jitter), "flip": p.flip} for p in crop_params(multicrop)],
        "multicrop": multicrop,
        "pck_threshold_mm": PCK_THRESHOLD_MM,
        "auc_thresholds_mm": AUC_THRESHOLDS_MM.tolist(),
        "procrustes": "similarity (rotation, reflection allowed, scale, translation) fitted on "
                      "all 17 joints",
        "units": {m: "fraction" if m in _PERCENT else "mm" for m in protocol.metrics},
    }


# ----------------------------------------------------------------------------- CLI


def load_predictor(args: argparse.Namespace) -> Predictor:
    """The predictor of --checkpoint (eager, wrapped for uint8) or --torchscript."""
    device = torch.device(args.device)
    if args.checkpoint is not None:
        from training.checkpoint import load_checkpoint
        from training.export import ServingModel

        model, _ = load_checkpoint(args.checkpoint)
        module = ServingModel(model.eval()).to(device).eval()
    else:
        from training.export_onnx import load_exported

        module = load_exported(args.torchscript, device)
    return model_predictor(module, device)


def open_registered(spec: str, root: Path | None) -> SampleSource:
    """Open a dataset spec with the readers' registry (imported lazily: h5py and scipy)."""
    from training.data.registry import open_dataset

    if root is None:
        raise SystemExit(f"--data-root is needed to open {spec!r}: the folder holding h36m/, "
                         "mpi3d/ and mpii/")

    return open_dataset(spec, root)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", type=Path, help="training checkpoint (training.checkpoint)")
    model.add_argument("--torchscript", type=Path,
                       help="exported model.pt (training.export: uint8 input, coords first), "
                            "or model.onnx (run with ONNX Runtime on the cpu)")
    p.add_argument("--dataset", required=True,
                   help="dataset spec, e.g. h36m-test or mpi3d-test (h36m-* specs use the GT "
                        "root depth, others the knee-neck prior)")
    p.add_argument("--data-root", type=Path,
                   help="data root holding h36m/ and mpi3d/ (see training.data.registry)")
    p.add_argument("--protocol", choices=sorted(PROTOCOLS),
                   help="override the protocol chosen from the dataset spec")
    p.add_argument("--multicrop", action="store_true",
                   help="ten-crop test-time augmentation (2 flips x 5 centre offsets)")
    p.add_argument("--batch-size", type=int, default=32, help="crops per forward pass")
    p.add_argument("--workers", type=int, default=0, help="data loading processes")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--limit", type=int, help="evaluate only the first N examples")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    return p


def main(args: argparse.Namespace | None = None,
         open_source: SourceFactory = open_registered) -> dict[str, Any]:
    """Evaluate, print the tables and return (and with --out write) the results."""
    if args is None:
        args = get_args_parser().parse_args()
    if args.batch_size < 1:
        raise SystemExit(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise SystemExit(f"--limit must be at least 1, got {args.limit}")
    protocol = PROTOCOLS[args.protocol] if args.protocol else protocol_for(args.dataset)
    source = open_source(args.dataset, args.data_root)
    predictor = load_predictor(args)
    params = crop_params(args.multicrop)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    predictions = run_predictions(source, predictor, protocol, params, args.batch_size,
                                  args.limit, args.workers, log)
    summary = summarise(predictions, protocol)
    for grouping, rows in summary["groups"].items():
        print(format_table(grouping, rows, protocol.metrics), end="\n\n")
    print(format_table("overall", {"overall": summary["overall"]}, protocol.metrics))

    results = {
        "dataset": args.dataset,
        "data_root": None if args.data_root is None else str(args.data_root),
        "checkpoint": None if args.checkpoint is None else str(args.checkpoint),
        "torchscript": None if args.torchscript is None else str(args.torchscript),
        "samples": len(predictions.meta),
        "protocol": protocol_settings(protocol, args.multicrop),
        **summary,
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


def cli(argv: list[str] | None = None) -> int:
    """The `margipose-eval` command: exit status 0 after a run (main's dict is not a status)."""
    main(get_args_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
