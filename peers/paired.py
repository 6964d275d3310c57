"""Is model B's difference from model A more than noise? A paired bootstrap over people.

    python -m peers.paired --a model_repository/margipose-lite/2/model.onnx \
        --b build/q/repo/margipose-lite-int8/2/model.onnx --data-root build \
        --json bench/results/trunk/paired_v2_int8.json
    python -m peers.paired --a ... --b ... --dataset synthetic-test --protocol mpi3d

Both exported models (model.pt or model.onnx) see the same people and are scored as the
project's evaluators score them. On `real2d-val` (the default): against the teacher as
`peers.compare_real2d` does (PCK@0.05 / @0.1 of person size over the labelled joints, 3D
PA-MPJPE and root-aligned MPJPE in mm). On a dataset with 3D ground truth (`--protocol`): as
`margipose-eval` does (`training.evaluate`: its protocol's crops, root depth, joints and
metrics, each a mean over people).

The noise of a difference between two models on a set is what resampling the people does to
it: the people are drawn with replacement (`--resamples` times, fixed seed), the same draw for
both models, and each measure's difference B - A is recomputed; its 2.5th and 97.5th
percentiles are the 95 % interval. An interval that holds 0 means the set cannot tell the two
apart; one that does not means the difference is larger than what the choice of people explains.
It says nothing about other noise (another training seed gives another model).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from peers.common import dataset_parser, load_ours, open_source, write_json
from peers.compare_real2d import (
    THRESHOLDS,
    ours_on_boxes,
    person_errors_3d,
    read_teacher_3d,
    references,
)
from training.evaluate import (
    PROTOCOLS,
    Protocol,
    crop_params,
    model_predictor,
    run_predictions,
)
from training.metrics import score_poses

MEASURES = ("pck@0.05", "pck@0.1", "pa_mpjpe", "mpjpe")  # real2d-val's, against the teacher


def per_person(pixels: np.ndarray, rel3d: np.ndarray, labels: np.ndarray,
               labels3d: np.ndarray, masks: np.ndarray, sizes: np.ndarray
               ) -> dict[str, np.ndarray]:
    """Each person's parts of the measures: labelled joints, joints within each PCK threshold,
    and (NaN without teacher 3D) PA-MPJPE and root-aligned MPJPE over the labelled joints."""
    err = np.linalg.norm(pixels - labels, axis=-1) / sizes[:, None]
    out = {"joints": masks.sum(axis=1).astype(float)}
    for t in THRESHOLDS:
        out[f"hits@{t}"] = ((err <= t) & masks).sum(axis=1).astype(float)
    has3d = np.isfinite(labels3d).all(axis=(1, 2))
    out["pa_mpjpe"], out["mpjpe"] = np.full(len(masks), np.nan), np.full(len(masks), np.nan)
    if has3d.any():
        out["pa_mpjpe"][has3d], out["mpjpe"][has3d] = person_errors_3d(
            rel3d[has3d], labels3d[has3d], masks[has3d])
    return out


def measures(parts: dict[str, np.ndarray], index: np.ndarray | None = None) -> dict[str, float]:
    """The set's measures from per-person parts (optionally for a resample `index` of people).
    real2d parts (`joints`, `hits@t`): PCK pooled over joints as compare_real2d computes it, 3D
    errors averaged over people; any other parts: each one's mean over people."""
    take = (lambda a: a) if index is None else (lambda a: a[index])
    if "joints" not in parts:
        return {k: float(np.mean(take(v))) for k, v in parts.items()}
    out = {f"pck@{t}": float(take(parts[f"hits@{t}"]).sum() / take(parts["joints"]).sum())
           for t in THRESHOLDS}
    for key in ("pa_mpjpe", "mpjpe"):
        values = take(parts[key])
        out[key] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    return out


def paired_bootstrap(a: dict[str, np.ndarray], b: dict[str, np.ndarray], resamples: int = 2000,
                     seed: int = 0) -> list[dict[str, Any]]:
    """One row per measure: A's and B's value, B - A, and the 95 % interval of B - A over
    resamples of the people (the same draw for both models)."""
    n, m = (len(next(iter(parts.values()))) for parts in (a, b))
    if n != m or set(a) != set(b):
        raise ValueError(f"the two models were scored on different people ({n} and {m})")
    rng = np.random.default_rng(seed)
    full_a, full_b = measures(a), measures(b)
    names = list(full_a)
    draws: dict[str, list[float]] = {m: [] for m in names}
    for _ in range(resamples):
        index = rng.integers(0, n, n)
        ma, mb = measures(a, index), measures(b, index)
        for m in names:
            draws[m].append(mb[m] - ma[m])
    rows = []
    for m in names:
        low, high = np.nanpercentile(draws[m], [2.5, 97.5])
        rows.append({"measure": m, "a": full_a[m], "b": full_b[m],
                     "difference": full_b[m] - full_a[m], "ci95_low": float(low),
                     "ci95_high": float(high), "resamples": resamples, "people": n,
                     "beyond_noise": not (low <= 0.0 <= high)})
    return rows


def score(source, model: Path, teacher3d, limit: int | None = None) -> dict[str, np.ndarray]:
    """An exported model's per-person parts on the samples of `source` (the first `limit`)."""
    count = len(source) if limit is None else min(limit, len(source))
    labels, labels3d, masks, sizes = references([source[i] for i in range(count)], teacher3d)
    module, _ = load_ours(model)
    pixels, rel3d = ours_on_boxes(source, model_predictor(module, torch.device("cpu")), limit)
    return per_person(pixels, rel3d, labels, labels3d, masks, sizes)


def score_3d(source, model: Path, protocol: Protocol, limit: int | None = None
             ) -> dict[str, np.ndarray]:
    """An exported model's per-person metrics (the protocol's) on a dataset with 3D truth."""
    module, _ = load_ours(model)
    predictor = model_predictor(module, torch.device("cpu"))
    predictions = run_predictions(source, predictor, protocol, crop_params(False), 8, limit)
    scores = score_poses(predictions.pred, predictions.gt, protocol.joints)
    return {m: np.asarray(getattr(scores, m), dtype=float) for m in protocol.metrics}


def markdown(rows: list[dict[str, Any]]) -> str:
    def show(measure: str, v: float) -> str:
        return f"{v:.1f} mm" if "mpjpe" in measure else f"{100 * v:.1f} %"  # PCK, AUC: 0-1

    lines = ["| measure | A | B | B - A | 95 % interval of B - A | beyond noise |",
             "| :-- | --: | --: | --: | --: | :-- |"]
    for r in rows:
        m = r["measure"]
        lines.append(f"| {m} | {show(m, r['a'])} | {show(m, r['b'])} | {show(m, r['difference'])}"
                     f" | {show(m, r['ci95_low'])} to {show(m, r['ci95_high'])} "
                     f"| {'yes' if r['beyond_noise'] else 'no'} |")
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    p = dataset_parser(__doc__, "real2d-val", torchscript=False)
    p.add_argument("--a", type=Path, required=True, help="exported model A (model.pt/.onnx)")
    p.add_argument("--b", type=Path, required=True, help="exported model B")
    p.add_argument("--protocol", choices=sorted(PROTOCOLS),
                   help="score a dataset with 3D ground truth as margipose-eval does (e.g. "
                        "synthetic-test with mpi3d); default: real2d-val against the teacher")
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    return p


def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    source = open_source(args)
    if args.protocol is not None:
        protocol = PROTOCOLS[args.protocol]
        a, b = (score_3d(source, m, protocol, args.limit) for m in (args.a, args.b))
    else:
        teacher3d = read_teacher_3d(args.data_root / "real2d" / "labels.jsonl")
        a, b = (score(source, m, teacher3d, args.limit) for m in (args.a, args.b))
    rows = paired_bootstrap(a, b, args.resamples, args.seed)
    print(f"A = {args.a}\nB = {args.b}\n")
    print(markdown(rows))
    write_json(args.json, {"dataset": args.dataset, "protocol": args.protocol,
                           "a": str(args.a), "b": str(args.b), "rows": rows})
    return rows


if __name__ == "__main__":
    main(get_args_parser().parse_args())
