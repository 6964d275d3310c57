"""Where an upright person's joints sit in their reference crop: the serving core's
`posecontract.framing.BODY_TEMPLATE`, measured on training splits.

    python -m training.framing template --data-root build
    python -m training.framing evaluate --model model_repository/margipose-lite/5/model.onnx \\
        --data-root build --dataset real2d-val --json build/eval/framing/real2d-val.json

For each person (evenly spaced samples of each source) the reference crop without augmentation
(`make_example`), the normalised (x, y) of the labelled joints; people kept when they stand
upright (the longer side of their joints' extent is the vertical one and the ankles lie below the
head by at least `UPRIGHT` of it); the per-joint median over them and their mirror images (left
and right swapped, x negated), so the template is left-right symmetric.

`evaluate` measures the serving core's re-framing rule on the held-out partial views of
`training.visibility` (the same crops, seed and labels): each view's crop is the first pass; where
`full_body_frame` asks for a crop at least `REFRAME_MIN_SCALE` times larger, a second crop is
rendered from the source picture there (the cut blacked out again beyond its line, an occluder
copied over from the first crop) and run, and its seen joints are mapped back into the first
crop. The seen joints' 2D error (crop pixels of the first crop, as `training.visibility`) and
PCK at 5 and 10 % of the crop (as `peers.partial_views`) with and without the rule, the paired
bootstrap interval of the change (people resampled), and for 3D sets the seen joints'
root-relative MPJPE.
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from posecontract.skeleton import FLIP_PERMUTATION, JOINT_NAMES, joint_index

UPRIGHT = 0.85
PCK_FRACTIONS = (0.05, 0.10)  # of the crop side, as peers.partial_views scores the same crops
DEFAULT_SOURCES = ("synthetic-train:1500", "real2d3d-train:419")
_ANKLES = [joint_index("right_ankle"), joint_index("left_ankle")]
_HEAD = joint_index("head")


def reference_joints(source, count: int) -> np.ndarray:
    """(n, 17, 2) normalised joints of `count` evenly spaced samples' reference crops; NaN where
    a joint is not labelled."""
    from training.data.transforms import make_example

    n = min(count, len(source))
    rows = []
    for i in np.linspace(0, len(source) - 1, n).astype(int):
        example = make_example(source[int(i)])
        xy = example.target.double().numpy()[:, :2].copy()
        xy[~example.labelled.numpy()] = np.nan
        rows.append(xy)
    return np.stack(rows)


def upright(joints: np.ndarray) -> np.ndarray:
    """(n,) bool: the people of `joints` (n, 17, 2) who stand upright (see the module doc)."""
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # people with no ankle labelled
        extent = np.nanmax(joints, axis=1) - np.nanmin(joints, axis=1)
        drop = np.nanmean(joints[:, _ANKLES, 1], axis=1) - joints[:, _HEAD, 1]
        return (extent[:, 1] >= extent[:, 0]) & (drop > UPRIGHT * extent[:, 1])


def body_template(joints: np.ndarray) -> np.ndarray:
    """The symmetric median template (17, 2) of the upright people of `joints` (n, 17, 2)."""
    kept = joints[upright(joints)]
    if len(kept) == 0:
        raise ValueError("No upright people to build a template from")
    mirrored = kept[:, list(FLIP_PERMUTATION)].copy()
    mirrored[..., 0] *= -1
    return np.nanmedian(np.concatenate([kept, mirrored]), axis=0)


def _view_cut(sample, view: str, seed: int, index: int):
    """The cut `training.visibility.view_example` drew for this view (None for full and
    occluder views): the same generator and the same draws."""
    from training.data.transforms import draw_partial_cut, example_rng
    from training.visibility import _VIEW_PARTIAL, _VIEW_STREAM, VIEWS

    if view not in ("cut", "tight"):
        return None
    rng = example_rng(seed, index, VIEWS.index(_VIEW_STREAM.get(view, view)))
    return draw_partial_cut(sample, _VIEW_PARTIAL[view], rng)[0]


def copy_painted(pixels: np.ndarray, crop, first: np.ndarray, painted: np.ndarray,
                 first_crop) -> None:
    """Copy into `pixels` (the image of `crop`) the pixels of `first` (the image of
    `first_crop`) flagged in `painted` (an occluder drawn there), nearest neighbour, in place."""
    n = pixels.shape[0]
    cols, rows = np.meshgrid(np.arange(n) + 0.5, np.arange(n) + 0.5)
    points = np.stack([cols.ravel(), rows.ravel(), np.ones(n * n)])
    mapped = first_crop.pixel_matrix @ np.linalg.inv(crop.pixel_matrix) @ points
    u, v = np.floor(mapped[0]).astype(int), np.floor(mapped[1]).astype(int)
    inside = (u >= 0) & (u < first.shape[1]) & (v >= 0) & (v < first.shape[0])
    take = np.zeros(n * n, bool)
    take[inside] = painted[v[inside], u[inside]]
    flat = pixels.reshape(-1, 3)
    flat[take] = first[v[take], u[take]]


def evaluate_reframing(source, module, seed: int | None = None, limit: int | None = None,
                       views: Sequence[str] = ("full", "cut", "occluder", "tight"),
                       rounds: int = 2000, min_scales: Sequence[float] | None = None) -> dict:
    """The re-framing rule on every view of `source` (see the module doc). `min_scales`: the
    thresholds to score (default the service's REFRAME_MIN_SCALE); `views` holds the first's
    rows, `sweep` every one's when there are several."""
    import torch

    from posecontract.crop_image import render_crop
    from posecontract.framing import REFRAME_MIN_SCALE, frame_crop, full_body_frame
    from training.data.partial import apply_cut
    from training.visibility import EVAL_SEED, module_runner, view_example

    seed = EVAL_SEED if seed is None else seed
    min_scales = list(min_scales or [REFRAME_MIN_SCALE])

    runner = module_runner(module)

    def run(images: list) -> tuple[np.ndarray, np.ndarray]:
        parts = [runner(torch.stack(images[i:i + 16])) for i in range(0, len(images), 16)]
        if parts[0].visibility is None:
            raise SystemExit("The model has no visibility head: nothing to frame from")
        return (np.concatenate([p.coords for p in parts]),
                np.concatenate([p.visibility for p in parts]))

    count = len(source) if limit is None else min(limit, len(source))
    result = {"dataset": getattr(source, "name", "?"), "samples": count, "seed": seed,
              "reframe_min_scale": min_scales[0], "views": {}}
    if len(min_scales) > 1:
        result["sweep"] = {str(t): {} for t in min_scales}
    samples = [source[i] for i in range(count)]
    for view in views:
        examples = [view_example(s, view, seed, i) for i, s in enumerate(samples)]
        coords, vis = run([e.image for e in examples])
        chosen, scales, images, crops = [], [], [], []
        for i, (sample, example) in enumerate(zip(samples, examples, strict=True)):
            frame = full_body_frame(coords[i], vis[i])
            if frame is None or frame.scale < min(min_scales):
                continue
            first = example.crop
            crop = frame_crop(first, frame, sample.camera)  # as the serving core does
            pixels = render_crop(sample.image, crop)
            cut = _view_cut(sample, view, seed, i)
            if cut is not None and not cut.tight:
                apply_cut(pixels, crop, cut)
            if view == "occluder":
                image = example.image.permute(1, 2, 0).numpy()
                painted = (image != render_crop(sample.image, first)).any(axis=-1)
                copy_painted(pixels, crop, image, painted, first)
            chosen.append(i)
            scales.append(frame.scale)
            images.append(torch.from_numpy(pixels).permute(2, 0, 1).contiguous())
            crops.append(crop)
        again, again_vis = run(images) if images else (None, None)
        shown = None
        if view == "tight":
            shown = np.stack([view_example(s, "full", seed, i).visible.numpy()
                              for i, s in enumerate(samples)])
        for t in min_scales:
            second = {i: (again[k], again_vis[k], crops[k])
                      for k, i in enumerate(chosen) if scales[k] >= t}
            row = _score_view(examples, coords, vis, second, shown, rounds)
            if t == min_scales[0]:
                result["views"][view] = row
            if "sweep" in result:
                result["sweep"][str(t)][view] = row
    return result


def _score_view(examples, coords: np.ndarray, vis: np.ndarray, second: dict, shown, rounds: int
                ) -> dict:
    """One view's row: the first pass against the first pass with `second` ({index: (coords,
    visibility, crop)} of the people run again) put in its place."""
    from training.camera import crop_targets, ndc_to_camera
    from training.metrics import mpjpe, root_relative

    final, final_vis = coords.copy(), vis.copy()
    cameras = [e.to_camera(c) for e, c in zip(examples, coords, strict=True)]
    for i, (again, again_vis, crop) in second.items():
        # both crops keep the root depth: the same z_ref maps both passes to camera space
        cameras[i] = ndc_to_camera(again, crop, examples[i].z_ref)
        final[i, :, :2] = crop_targets(cameras[i], examples[i].crop)[1][:, :2]
        final_vis[i] = again_vis
    before, after, joints, mm_before, mm_after = [], [], [], [], []
    hits = {(k, f): 0 for k in ("first_pass", "reframed") for f in PCK_FRACTIONS}
    for i, example in enumerate(examples):
        seen = (example.visible & example.labelled).numpy()
        if not seen.any():
            continue
        target = example.target.double().numpy()[seen, :2]
        half = example.crop.size / 2
        first_px = np.linalg.norm(coords[i, seen, :2] - target, axis=1) * half
        final_px = np.linalg.norm(final[i, seen, :2] - target, axis=1) * half
        before.append(first_px.sum())
        after.append(final_px.sum())
        for f in PCK_FRACTIONS:
            hits[("first_pass", f)] += int((first_px < f * example.crop.size).sum())
            hits[("reframed", f)] += int((final_px < f * example.crop.size).sum())
        joints.append(int(seen.sum()))
        if example.has_depth:  # never mirrored here (no augmentation): canonical order
            truth = root_relative(example.joints)[seen]
            mm_before.append(mpjpe(root_relative(example.to_camera(coords[i]))[seen], truth))
            mm_after.append(mpjpe(root_relative(cameras[i])[seen], truth))
    before, after, joints = map(np.asarray, (before, after, joints))
    rng = np.random.default_rng(0)  # the same resamples for every threshold
    change = []
    for _ in range(rounds):
        pick = rng.integers(0, len(joints), len(joints))
        change.append((after[pick].sum() - before[pick].sum()) / joints[pick].sum())
    low, high = np.percentile(change, [2.5, 97.5])
    row = {
        "seen_joints": int(joints.sum()), "reframed": len(second),
        "reframed_fraction": len(second) / len(examples),
        "error_px_first_pass": float(before.sum() / joints.sum()),
        "error_px_reframed": float(after.sum() / joints.sum()),
        "change_px": float((after.sum() - before.sum()) / joints.sum()),
        "change_px_95": [float(low), float(high)],
        **{f"pck_{round(100 * f)}_{k}": hits[(k, f)] / int(joints.sum()) for (k, f) in hits}}
    labelled = np.stack([e.labelled.numpy() for e in examples])
    visible = np.stack([e.visible.numpy() for e in examples])
    for name, prob in (("first_pass", vis), ("reframed", final_vis)):
        row[f"in_view_accuracy_{name}"] = float(((prob >= 0.5) == visible)[labelled].mean())
    if shown is not None:
        # A re-framed tight box sees past the box: scored also against what the picture shows
        # (the whole view's labels: in the source image, not hidden), the service's meaning of
        # visibility once it re-frames.
        for name, prob in (("first_pass", vis), ("reframed", final_vis)):
            row[f"in_picture_accuracy_{name}"] = float(((prob >= 0.5) == shown)[labelled].mean())
    if mm_before:
        row.update(people_3d=len(mm_before), seen_mpjpe_mm_first_pass=float(np.mean(mm_before)),
                   seen_mpjpe_mm_reframed=float(np.mean(mm_after)))
    return row


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("template", help="measure the body template on training splits")
    t.add_argument("--data-root", type=Path, required=True)
    t.add_argument("--sources", nargs="+", default=list(DEFAULT_SOURCES), metavar="NAME:COUNT")
    e = sub.add_parser("evaluate", help="the re-framing rule on held-out partial views")
    e.add_argument("--model", type=Path, required=True, help="model.pt or model.onnx")
    e.add_argument("--data-root", type=Path, required=True)
    e.add_argument("--dataset", required=True, help="e.g. real2d-val or synthetic-test")
    e.add_argument("--limit", type=int, help="only the first N samples")
    e.add_argument("--json", type=Path, help="write the results here")
    e.add_argument("--min-scale", type=float, nargs="+",
                   help="re-frame from this scale (several: a sweep; default the service's)")
    return p


def main(argv: Sequence[str] | None = None) -> dict:
    from training.evaluate import open_registered

    args = get_args_parser().parse_args(argv)
    if args.command == "evaluate":
        from training.export_onnx import load_exported

        result = evaluate_reframing(open_registered(args.dataset, args.data_root),
                                    load_exported(args.model), limit=args.limit,
                                    min_scales=args.min_scale)
        result["model"] = str(args.model)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=2) + "\n")
        for view, row in result["views"].items():
            low, high = row["change_px_95"]
            print(f"{view:9s} seen px {row['error_px_first_pass']:.2f} -> "
                  f"{row['error_px_reframed']:.2f} ({row['change_px']:+.2f}, 95% {low:+.2f} to "
                  f"{high:+.2f}), re-framed {100 * row['reframed_fraction']:.0f}%"
                  + (f"; seen MPJPE {row['seen_mpjpe_mm_first_pass']:.1f} -> "
                     f"{row['seen_mpjpe_mm_reframed']:.1f} mm" if "people_3d" in row else ""))
        for t, rows in result.get("sweep", {}).items():
            print(f"from {t}: " + "  ".join(
                f"{view} {row['error_px_reframed']:.2f} px ({row['change_px']:+.2f}, "
                f"{100 * row['reframed_fraction']:.0f}%)" for view, row in rows.items()))
        return result
    from training.visibility import _parse_sources

    parts = [reference_joints(open_registered(name, args.data_root), count)
             for name, count in _parse_sources(args.sources)]
    joints = np.concatenate(parts)
    template = body_template(joints)
    result = {"people": int(upright(joints).sum()), "of": len(joints),
              "template": {n: [round(float(v), 3) for v in xy]
                           for n, xy in zip(JOINT_NAMES, template, strict=True)}}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
