"""Partial views, measured: how well a model says which joints are in view, and how well it
places the ones that are.

Two commands:

    python -m training.visibility calibrate --checkpoint runs/vis/last.pt --data-root build \\
        --sources synthetic-train:300 real2d3d-train:150 --out runs/vis/calibrated.pt
    python -m training.visibility evaluate --model build/eval/v4/repo/margipose-lite/4/model.onnx \\
        --data-root build --dataset synthetic-test --json build/eval/v4/partial_synthetic.json

**The evaluation set** is fixed by the dataset and a seed: every sample of the (held-out) dataset
is seen four times, on its reference box without crop augmentation: whole (`full`), cut by a
border (`cut`, `training.data.partial.draw_cut`, the box re-framed around what is left, as a
detector or a user would box it), with an occluder (`occluder`), and in a tight box (`tight`:
the `cut` view's box and line, but the picture goes on beyond it, as when a user or the
service's second pass boxes only the joints in view). The in-view labels are the
examples' own (`Example.visible`, over the labelled joints). For `real2d-val` the labels are the
teacher's (BlazePose heavy on the whole frame, before the cut), so the "seen" joints of a cut crop
are scored against what the teacher saw in the full picture.

**Visibility** (models with the head): accuracy at 0.5, the Brier score, the expected calibration
error (ECE: the count-weighted mean gap between mean confidence and observed frequency over ten
equal-width confidence bins) and the reliability table behind it, overall and per view.

**Seen joints**: the 2D error in the crop's pixels (of the 256-pixel model input) and, for 3D
datasets, the root-relative error in mm at the true root depth (the MPJPE of the seen joints of
each person, mean over people), per view. A model without the head is scored on the same joints,
so old and new models compare on the same crops.

**Calibration** fits the head's temperature T and a per-joint offset o_j (logits / T + o_j) on
training-split crops made the same way (never on the held-out sets): the logistic regression of
the in-view labels on (logit, joint), T kept in [0.25, 4]; written into the checkpoint, whose
export carries it. The offsets let joints the head is systematically too sure or too unsure of
(wrists, ankles) move on their own. `--temperature-only` fits T alone, on a grid of ratio 1.02
(how version 4 was calibrated).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.data.partial import PartialView
from training.data.transforms import Example, example_rng, make_example, partial_example
from training.metrics import mpjpe, root_relative

VIEWS = ("full", "cut", "occluder", "tight")
_VIEW_PARTIAL = {"cut": PartialView(cut_prob=1.0), "occluder": PartialView(occluder_prob=1.0),
                 "tight": PartialView(cut_prob=1.0, tight_prob=1.0)}
_VIEW_STREAM = {"tight": "cut"}  # a tight view draws the same line as the cut view
EVAL_SEED = 20261205  # fixes the held-out partial views: every model sees the same crops
CALIBRATION_SEED = 7
BINS = 10
TEMPERATURE_RANGE = (0.25, 4.0)


def view_example(sample, view: str, seed: int, index: int) -> Example:
    """The `view` of one sample: its reference box whole, cut, occluded or tightly boxed
    (deterministic)."""
    if view == "full":
        return make_example(sample)
    rng = example_rng(seed, index, VIEWS.index(_VIEW_STREAM.get(view, view)))
    return partial_example(sample, None, None, _VIEW_PARTIAL[view], rng)


@dataclass
class Predictions:
    """What a model said about a list of examples."""

    coords: np.ndarray  # (N, 17, 3) normalised
    visibility: np.ndarray | None  # (N, 17) in-view probabilities, None without the head
    logits: np.ndarray | None = None  # (N, 17) uncalibrated logits (checkpoints only)


Runner = Callable[[torch.Tensor], Predictions]


def exported_runner(path: Path) -> Runner:
    """An exported model (model.pt or model.onnx): uint8 crops -> Predictions."""
    from training.export_onnx import load_exported

    return module_runner(load_exported(path))


def module_runner(module) -> Runner:
    """A loaded export (TorchScript module or `OnnxModule`): uint8 crops -> Predictions, with
    the in-view probabilities when the model has the sixth output."""

    def run(images: torch.Tensor) -> Predictions:
        with torch.inference_mode():
            out = module(images)
        vis = out[5].double().numpy() if len(out) > 5 else None
        return Predictions(out[0].double().numpy(), vis)

    return run


def checkpoint_runner(model) -> Runner:
    """A training checkpoint's model (eval mode): crops -> Predictions with raw logits."""
    from training.engine import normalise_images

    model = model.eval()

    def run(images: torch.Tensor) -> Predictions:
        with torch.inference_mode():
            coords, _, logits = model(normalise_images(images, model))
        if logits is None:
            return Predictions(coords.double().numpy(), None)
        head = model.visibility
        raw = ((logits - head.offset) * head.temperature).double().numpy()
        return Predictions(coords.double().numpy(), 1 / (1 + np.exp(-logits.double().numpy())),
                           raw)

    return run


def predict(run: Runner, examples: Sequence[Example], batch: int = 16) -> Predictions:
    parts = [run(torch.stack([e.image for e in examples[i:i + batch]]))
             for i in range(0, len(examples), batch)]
    vis = None if parts[0].visibility is None else np.concatenate([p.visibility for p in parts])
    logits = None if parts[0].logits is None else np.concatenate([p.logits for p in parts])
    return Predictions(np.concatenate([p.coords for p in parts]), vis, logits)


def reliability(prob: np.ndarray, label: np.ndarray, bins: int = BINS) -> dict[str, Any]:
    """Accuracy at 0.5, Brier score, ECE and the reliability table of probabilities `prob`
    against boolean `label` (flat arrays of the labelled joints)."""
    prob, label = np.asarray(prob, np.float64), np.asarray(label, bool)
    if prob.shape != label.shape or prob.ndim != 1:
        raise ValueError(f"prob {prob.shape} and label {label.shape} must be flat and agree")
    if len(prob) == 0:
        raise ValueError("No labelled joints to score")
    which = np.minimum((prob * bins).astype(int), bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        inside = which == b
        n = int(inside.sum())
        if n == 0:
            continue
        conf, freq = float(prob[inside].mean()), float(label[inside].mean())
        ece += n / len(prob) * abs(conf - freq)
        table.append({"bin": [b / bins, (b + 1) / bins], "count": n,
                      "mean_confidence": conf, "frequency": freq})
    return {"joints": len(prob), "in_view_fraction": float(label.mean()),
            "accuracy": float(((prob >= 0.5) == label).mean()),
            "brier": float(((prob - label) ** 2).mean()), "ece": ece, "reliability": table}


def seen_errors(examples: Sequence[Example], coords: np.ndarray) -> dict[str, float]:
    """Errors of the seen (in view, labelled) joints: 2D in crop pixels over all of them, and for
    3D examples the root-relative MPJPE (mm, true root depth) of each person's seen joints."""
    px, mm = [], []
    for e, c in zip(examples, coords, strict=True):
        seen = (e.visible & e.labelled).numpy()
        if not seen.any():
            continue
        target = e.target.double().numpy()
        px.extend(np.linalg.norm(c[seen, :2] - target[seen, :2], axis=-1) * e.crop.size / 2)
        if e.has_depth:
            pred = root_relative(e.to_camera(c))
            truth = root_relative(e.joints)
            # canonical order both (to_camera un-mirrors), so the crop-order mask is un-mirrored
            # too: these crops are never mirrored (no augmentation), checked here
            assert not e.crop.flipped
            mm.append(float(mpjpe(pred[seen], truth[seen])))
    out = {"seen_joints": len(px), "error_px_mean": float(np.mean(px)),
           "error_px_median": float(np.median(px))}
    if mm:
        out["seen_mpjpe_mm"] = float(np.mean(mm))
        out["people_3d"] = len(mm)
    return out


def evaluate_views(source, run: Runner, seed: int = EVAL_SEED, limit: int | None = None,
                   views: Sequence[str] = VIEWS) -> dict[str, Any]:
    """Every view of every sample (or the first `limit`): errors and visibility per view."""
    count = len(source) if limit is None else min(limit, len(source))
    result: dict[str, Any] = {"dataset": getattr(source, "name", "?"), "samples": count,
                              "seed": seed, "views": {}}
    every_prob, every_label = [], []
    for view in views:
        examples = [view_example(source[i], view, seed, i) for i in range(count)]
        pred = predict(run, examples)
        row: dict[str, Any] = seen_errors(examples, pred.coords)
        labelled = np.stack([e.labelled.numpy() for e in examples])
        visible = np.stack([e.visible.numpy() for e in examples])
        row["unseen_joints"] = int((labelled & ~visible).sum())
        if pred.visibility is not None:
            row["visibility"] = reliability(pred.visibility[labelled], visible[labelled])
            every_prob.append(pred.visibility[labelled])
            every_label.append(visible[labelled])
        result["views"][view] = row
    if every_prob:
        result["visibility"] = reliability(np.concatenate(every_prob),
                                           np.concatenate(every_label))
    return result


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """The temperature in TEMPERATURE_RANGE (grid ratio 1.02) minimising the mean negative
    log-likelihood of `labels` under sigmoid(logits / T); returns (T, NLL at T, NLL at 1)."""
    z, y = np.asarray(logits, np.float64), np.asarray(labels, bool)

    def nll(t: float) -> float:
        s = z / t
        # log(1 + exp(-s)) for positives, log(1 + exp(s)) for negatives, stably
        return float(np.mean(np.logaddexp(0.0, np.where(y, -s, s))))

    lo, hi = TEMPERATURE_RANGE
    grid = lo * 1.02 ** np.arange(int(math.log(hi / lo) / math.log(1.02)) + 1)
    losses = [nll(float(t)) for t in grid]
    best = int(np.argmin(losses))
    return float(grid[best]), losses[best], nll(1.0)


def fit_calibration(logits: np.ndarray, labels: np.ndarray, labelled: np.ndarray,
                    iterations: int = 50) -> tuple[float, np.ndarray, float, float]:
    """Temperature T and per-joint offsets o (J,) minimising the mean negative log-likelihood of
    the in-view `labels` (N, J) under sigmoid(logits / T + o_j) over the `labelled` (N, J)
    joints: a logistic regression on (logit, joint) by Newton's method (L2 of 1e-3 on the
    offsets keeps a joint seen only one way finite). T is kept in TEMPERATURE_RANGE.
    Returns (T, o, NLL fitted, NLL uncalibrated)."""
    z = np.asarray(logits, np.float64)
    y = np.asarray(labels, bool)
    m = np.asarray(labelled, bool)
    n_joints = z.shape[1]
    joint = np.broadcast_to(np.arange(n_joints), z.shape)[m]
    z, y = z[m], y[m].astype(np.float64)
    if len(z) == 0:
        raise ValueError("No labelled joints to calibrate on")
    design = np.zeros((len(z), 1 + n_joints))
    design[:, 0] = z
    design[np.arange(len(z)), 1 + joint] = 1.0
    ridge = np.full(1 + n_joints, 1e-3)
    ridge[0] = 0.0

    def nll(t: np.ndarray) -> float:
        s = design @ t
        return float(np.mean(np.logaddexp(0.0, s) - y * s))

    def newton(theta: np.ndarray, free: slice) -> np.ndarray:
        """Damped Newton steps on theta[free], the other entries held."""
        x, r = design[:, free], ridge[free]
        for _ in range(iterations):
            p = 1 / (1 + np.exp(-(design @ theta)))
            grad = x.T @ (p - y) / len(z) + r * theta[free]
            hess = (x * (p * (1 - p))[:, None]).T @ x / len(z) + np.diag(r + 1e-9)
            step = np.zeros_like(theta)
            step[free] = np.linalg.solve(hess, grad)
            rate, before = 1.0, nll(theta)
            while nll(theta - rate * step) > before + 1e-12 and rate > 1e-4:
                rate /= 2
            theta = theta - rate * step
            if np.abs(rate * step).max() < 1e-9:
                break
        return theta

    start = np.zeros(1 + n_joints)
    start[0] = 1.0
    theta = newton(start, slice(None))
    lo, hi = TEMPERATURE_RANGE
    t = float(np.clip(1 / theta[0], lo, hi)) if theta[0] > 0 else hi
    if t != 1 / theta[0]:  # the scale hit its bound: refit the offsets alone at that T
        theta[0] = 1 / t
        theta = newton(theta, slice(1, None))
    return t, theta[1:].copy(), nll(theta), nll(start)


def calibration_set(sources: Sequence[tuple[Any, int]], seed: int = CALIBRATION_SEED
                    ) -> list[Example]:
    """Training-split examples of every view (evenly spaced samples of each source)."""
    examples = []
    for source, count in sources:
        if "val" in source.name.split("-")[-1] or "test" in source.name:
            raise ValueError(f"{source.name} is held out: calibrate on training splits only")
        picks = np.linspace(0, len(source) - 1, min(count, len(source))).astype(int)
        for i in picks:
            examples += [view_example(source[int(i)], v, seed, int(i)) for v in VIEWS]
    return examples


def reliability_figure(panels: Sequence[tuple[str, dict[str, Any]]], size: int = 360):
    """A PIL image of reliability diagrams, one panel per (title, `reliability` dict): per
    confidence bin a bar up to the observed in-view frequency, a tick at the bin's mean
    confidence, the diagonal of perfect calibration, and the ECE and joint count."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=12)
    pad, top = 40, 36
    canvas = Image.new("RGB", (size * len(panels), size), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    inner = size - pad - 12
    for k, (title, rel) in enumerate(panels):
        x0, y1 = k * size + pad, top + inner  # plot origin (confidence 0, frequency 0)

        def at(conf: float, freq: float, x0: float = x0, y1: float = y1) -> tuple[float, float]:
            return x0 + conf * inner, y1 - freq * (inner - top + 20)

        draw.rectangle((*at(0, 1), *at(1, 0)), outline=(0, 0, 0))
        draw.line((*at(0, 0), *at(1, 1)), fill=(150, 150, 150), width=1)
        for b in rel["reliability"]:
            lo, hi = b["bin"]
            draw.rectangle((*at(lo + 0.005, b["frequency"]), *at(hi - 0.005, 0)),
                           fill=(70, 130, 200), outline=(40, 80, 140))
            cx, cy = at(b["mean_confidence"], b["frequency"])
            draw.line((cx, cy - 4, cx, cy + 4), fill=(200, 60, 40), width=2)
        for v in (0.0, 0.5, 1.0):
            draw.text((at(v, 0)[0] - 8, y1 + 4), f"{v:g}", fill=(0, 0, 0), font=font)
            draw.text((x0 - 26, at(0, v)[1] - 6), f"{v:g}", fill=(0, 0, 0), font=font)
        draw.text((at(0.68, 0)[0], y1 + 4), "confidence", fill=(0, 0, 0), font=font)
        draw.text((x0 + 4, at(0, 1)[1] + 2), "in view (observed)", fill=(0, 0, 0), font=font)
        draw.text((x0, 6), title, fill=(0, 0, 0), font=font)
        draw.text((x0, 20), f"ECE {rel['ece']:.3f}, accuracy {100 * rel['accuracy']:.1f} %, "
                  f"{rel['joints']} joints", fill=(0, 0, 0), font=font)
    return canvas


def _parse_sources(specs: Sequence[str]) -> list[tuple[str, int]]:
    out = []
    for spec in specs:
        name, _, count = spec.partition(":")
        if not count.isdigit() or int(count) < 1:
            raise SystemExit(f"--sources takes NAME:COUNT (e.g. synthetic-train:300), got {spec!r}")
        out.append((name, int(count)))
    return out


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    cal = sub.add_parser("calibrate", help="fit the visibility head's temperature and offsets")
    cal.add_argument("--checkpoint", type=Path, required=True)
    cal.add_argument("--data-root", type=Path, required=True)
    cal.add_argument("--sources", nargs="+", required=True, metavar="NAME:COUNT",
                     help="training splits and how many samples of each (four views each)")
    cal.add_argument("--out", type=Path, required=True, help="the calibrated checkpoint")
    cal.add_argument("--temperature-only", action="store_true",
                     help="fit one temperature and no per-joint offsets (the version 4 way)")
    ev = sub.add_parser("evaluate", help="partial views of a held-out set")
    ev.add_argument("--model", type=Path, required=True, help="model.pt or model.onnx")
    ev.add_argument("--data-root", type=Path, required=True)
    ev.add_argument("--dataset", required=True, help="e.g. synthetic-test or real2d-val")
    ev.add_argument("--limit", type=int, help="only the first N samples")
    ev.add_argument("--json", type=Path, help="write the results here")
    fig = sub.add_parser("figure", help="reliability diagrams of evaluate's JSON files")
    fig.add_argument("results", type=Path, nargs="+", help="evaluate --json outputs")
    fig.add_argument("--out", type=Path, required=True, help="PNG to write")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from training.checkpoint import load_checkpoint, save_checkpoint
    from training.evaluate import open_registered

    args = get_args_parser().parse_args(argv)
    if args.command == "figure":
        panels = []
        for path in args.results:
            result = json.loads(path.read_text())
            if "visibility" not in result:
                raise SystemExit(f"{path} has no visibility results (a model without the head)")
            panels.append((f"{result['dataset']}: {', '.join(result.get('views', VIEWS))} views",
                           result["visibility"]))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        reliability_figure(panels).save(args.out)
        print(f"wrote {args.out}")
        return {"panels": len(panels)}
    if args.command == "calibrate":
        model, payload = load_checkpoint(args.checkpoint)
        if model.visibility is None:
            raise SystemExit(f"{args.checkpoint} has no visibility head to calibrate")
        model.visibility.temperature.fill_(1.0)
        model.visibility.offset.zero_()
        sources = [(open_registered(name, args.data_root), n)
                   for name, n in _parse_sources(args.sources)]
        examples = calibration_set(sources)
        pred = predict(checkpoint_runner(model), examples)
        labelled = np.stack([e.labelled.numpy() for e in examples])
        visible = np.stack([e.visible.numpy() for e in examples])
        if args.temperature_only:
            t, fitted, before = fit_temperature(pred.logits[labelled], visible[labelled])
            offsets = np.zeros(pred.logits.shape[1])
        else:
            t, offsets, fitted, before = fit_calibration(pred.logits, visible, labelled)
        model.visibility.temperature.fill_(t)
        model.visibility.offset.copy_(torch.from_numpy(offsets))
        extra = {k: v for k, v in payload.items() if k not in ("model_config", "state_dict")}
        extra["visibility_calibration"] = {
            "temperature": t, "offsets": [round(float(o), 4) for o in offsets],
            "nll": fitted, "nll_uncalibrated": before,
            "sources": list(args.sources), "examples": len(examples), "seed": CALIBRATION_SEED}
        save_checkpoint(args.out, model, **extra)
        result = extra["visibility_calibration"]
    else:
        source = open_registered(args.dataset, args.data_root)
        result = evaluate_views(source, exported_runner(args.model), limit=args.limit)
        result["model"] = str(args.model)
    text = json.dumps(result, indent=2)
    if getattr(args, "json", None):
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    summary = {k: v for k, v in result.items() if k not in ("views", "visibility")}
    print(json.dumps(summary))
    for view, row in result.get("views", {}).items():
        vis = row.get("visibility", {})
        print(f"{view:9s} seen px {row['error_px_mean']:.2f}"
              + (f"  seen mpjpe {row['seen_mpjpe_mm']:.1f} mm" if "seen_mpjpe_mm" in row else "")
              + (f"  acc {vis['accuracy']:.3f} ece {vis['ece']:.3f}" if vis else ""))
    return result


if __name__ == "__main__":
    main()
