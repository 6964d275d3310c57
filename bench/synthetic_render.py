"""Rendering speed of the synthetic-human engine on the CPU, one process, one sample at a time.

    python -m bench.synthetic_render --iters 40 --json bench/results/synthetic_render.json

Each call renders one full sample (`training.synthetic.source.render_sample`: pose, skin,
rasterise, shade, background, occluders, degradations; images of 360x480 to 512x384) and then
cuts its 256x256 training crop (`training.camera.crop_example`), as a data loader worker would.
Samples differ call by call (index i of seed 0), so the median covers the mix of poses, sizes
and backgrounds; the splits alternate call by call so that slow spells of a shared machine hit
both alike. numpy runs single-threaded here; a loader with N workers scales about N-fold.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench.report import describe_machine, machine_info, markdown_table, median_and_p90, write_json
from training.camera import CropParams, crop_example
from training.synthetic.body import ASSET, default_bodies
from training.synthetic.motions import default_motions
from training.synthetic.source import render_sample

SPLITS = ("train", "test")


def time_renders(warmup: int, iters: int) -> dict[str, dict[str, list[float]]]:
    """Seconds per rendered sample and per crop, for each split."""
    asset, library = default_bodies(), default_motions()
    stats: dict[str, dict[str, list[float]]] = {s: {"render": [], "crop": []} for s in SPLITS}
    for i in range(warmup + iters):
        for split in SPLITS if i % 2 == 0 else reversed(SPLITS):
            start = time.perf_counter()
            sample, _ = render_sample(asset, library, split, 0, i)
            rendered = time.perf_counter()
            crop_example(sample.image, sample.camera, sample.joints, CropParams(), sample.box)
            if i >= warmup:
                stats[split]["render"].append(rendered - start)
                stats[split]["crop"].append(time.perf_counter() - rendered)
    return stats


def summarise(stats: dict[str, dict[str, list[float]]]) -> list[dict[str, Any]]:
    """Rows (split, median/p90 render ms, median crop ms, samples per second)."""
    rows = []
    for split in SPLITS:
        render, p90 = median_and_p90(stats[split]["render"])
        crop = median_and_p90(stats[split]["crop"])[0]
        rows.append({"split": split, "render_ms": 1000 * render, "render_p90_ms": 1000 * p90,
                     "crop_ms": 1000 * crop, "samples_per_s": 1 / (render + crop)})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of `summarise` rows."""
    header = ["split", "render ms", "render p90 ms", "crop ms", "samples/s"]
    body = [[r["split"], f"{r['render_ms']:.0f}", f"{r['render_p90_ms']:.0f}",
             f"{r['crop_ms']:.1f}", f"{r['samples_per_s']:.1f}"] for r in rows]
    return markdown_table(header, body)


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--warmup", type=int, default=2, help="untimed samples per split")
    p.add_argument("--iters", type=int, default=40, help="timed samples per split")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    return p


def main(args: argparse.Namespace) -> None:
    """Time the renderer and print the table."""
    if args.iters < 1 or args.warmup < 0:
        raise SystemExit(f"Need --iters >= 1 and --warmup >= 0; got {args.iters} and "
                         f"{args.warmup}")
    machine = machine_info()
    rows = summarise(time_renders(args.warmup, args.iters))
    print(f"# Synthetic rendering: {describe_machine(machine)}")
    print(f"# one process, full sample + 256x256 crop; asset {ASSET.stat().st_size / 1e6:.1f} MB;"
          f" warm-up {args.warmup}, median of {args.iters} samples per split\n")
    print(format_table(rows))
    if args.json is not None:
        write_json(args.json, {"benchmark": "synthetic_render", "machine": machine,
                               "settings": {k: v for k, v in vars(args).items() if k != "json"},
                               "rows": rows})


if __name__ == "__main__":
    main(get_args_parser().parse_args())
