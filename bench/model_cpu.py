"""CPU latency and throughput of the MargiPose variants, eager against TorchScript.

    python -m bench.model_cpu --threads 2 --batch-sizes 1 8 --warmup 3 --iters 10 \
        --json bench/results/model_cpu.json

Each variant is built with random weights (timing does not depend on them) and BatchNorm
statistics calibrated on random images, so the maps are not degenerate. Two forms of it run on
uint8 images (N, 3, 256, 256) under torch.inference_mode:

- eager: `training.export.ServingModel`, the wrapper that owns input normalisation;
- torchscript: `training.export.to_torchscript`, scripted and frozen, the artefact we ship.

After the warm-up calls (TorchScript's profiling executor needs two to optimise its graph),
the two forms are timed in alternating order, iteration by iteration, so that the noise of a
shared machine falls on both alike; the speed-up is eager median / TorchScript median.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from bench.report import (
    add_common_args,
    apply_common_args,
    describe_machine,
    markdown_table,
    median_and_p90,
    write_json,
)
from posecontract.layout import INPUT
from training.export import ServingModel, calibrate_batchnorm, to_torchscript
from training.model import VARIANTS, MargiPose, build_model, variant_config

MODES = ("eager", "torchscript")


def build_variant(name: str, seed: int) -> MargiPose:
    """A randomly initialised variant with calibrated BatchNorm, in eval mode."""
    torch.manual_seed(seed)
    model = build_model(variant_config(name), pretrained=False)
    calibrate_batchnorm(model, seed=seed)
    return model


def time_alternating(runners: dict[str, Callable[[], object]], warmup: int, iters: int
                     ) -> dict[str, list[float]]:
    """Seconds per call of each runner; calls alternate between runners, order flipping each
    iteration, so slow spells of the machine hit every runner alike."""
    for _ in range(warmup):
        for run in runners.values():
            run()
    names = list(runners)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(iters):
        for name in names if i % 2 == 0 else reversed(names):
            start = time.perf_counter()
            runners[name]()
            times[name].append(time.perf_counter() - start)
    return times


def bench_variant(name: str, batch_sizes: list[int], warmup: int, iters: int, seed: int
                  ) -> list[dict[str, Any]]:
    """Rows (variant, mode, batch, median/p90 ms per batch, images/s, speed-up) for one variant."""
    model = build_variant(name, seed)
    forms: dict[str, Callable[[Tensor], object]] = {
        "eager": ServingModel(model).eval(),
        "torchscript": to_torchscript(model),
    }
    g = torch.Generator().manual_seed(seed)
    rows = []
    for batch in batch_sizes:
        images = torch.randint(0, 256, (batch, *INPUT.dims), dtype=torch.uint8, generator=g)
        runners = {mode: (lambda f=form, x=images: f(x)) for mode, form in forms.items()}
        with torch.inference_mode():
            times = time_alternating(runners, warmup, iters)
        medians = {}
        for mode in MODES:
            median, p90 = median_and_p90(times[mode])
            medians[mode] = median
            rows.append({
                "variant": name, "batch": batch, "mode": mode,
                "median_ms": 1000 * median, "p90_ms": 1000 * p90,
                "images_per_s": batch / median,
                "speedup_vs_eager": medians["eager"] / median,
            })
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of `bench_variant` rows."""
    header = ["variant", "mode", "batch", "median ms/batch", "p90 ms/batch", "images/s",
              "speed-up vs eager"]
    body = [[r["variant"], r["mode"], str(r["batch"]), f"{r['median_ms']:.1f}",
             f"{r['p90_ms']:.1f}", f"{r['images_per_s']:.2f}",
             "-" if r["mode"] == "eager" else f"{r['speedup_vs_eager']:.2f}x"] for r in rows]
    return markdown_table(header, body, text_columns=2)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", choices=sorted(VARIANTS), action="append",
                   help="variant to time (repeatable; default: all)")
    add_common_args(p, warmup=3, warmup_help="untimed calls per form and batch size",
                    iters_help="timed calls per form and batch size")
    return p


def main(args: argparse.Namespace) -> None:
    machine = apply_common_args(args)
    variants = args.variant or list(VARIANTS)
    rows = [row for name in variants
            for row in bench_variant(name, args.batch_sizes, args.warmup, args.iters, args.seed)]
    print(f"# CPU latency: {describe_machine(machine)}")
    print(f"# warm-up {args.warmup}, timed {args.iters} iterations per form and batch size; "
          "random weights, calibrated BN, uint8 input, torch.inference_mode\n")
    print(format_table(rows))
    if args.json is not None:
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        write_json(args.json, {"benchmark": "model_cpu", "machine": machine,
                               "settings": {**settings, "variant": variants}, "rows": rows})


if __name__ == "__main__":
    main(get_args_parser().parse_args())
