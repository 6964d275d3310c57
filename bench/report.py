"""Shared reporting for the benchmark scripts: the machine they ran on, tables and JSON files.

Imports torch only where torch is reported or set, so that benchmarks run in environments
without it (peers/bench_blazepose.py in the MediaPipe venv) share `cpu_model` and `base_info`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def base_info() -> dict[str, Any]:
    """Date, CPU, cores and RAM of this machine, and the Python version."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": round(ram / 2**30, 1),
        "python": platform.python_version(),
    }


def machine_info() -> dict[str, Any]:
    """`base_info`, plus the torch version and torch threads of the running process."""
    import torch

    return {**base_info(), "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def describe_machine(info: dict[str, Any]) -> str:
    """One line saying where and when the numbers were measured."""
    return (f"{info['date_utc']}, {info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB RAM, "
            f"Python {info['python']}, torch {info['torch']}, {info['torch_threads']} threads")


def median_and_p90(values: Sequence[float]) -> tuple[float, float]:
    """Median and 90th percentile (inclusive interpolation; the max for fewer than two values)."""
    if not values:
        raise ValueError("no measurements; use at least one timed iteration")
    if len(values) == 1:
        return values[0], values[0]
    return statistics.median(values), statistics.quantiles(values, n=10, method="inclusive")[-1]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int = 1
                   ) -> str:
    """A GitHub markdown table; the first `text_columns` columns left-aligned, numbers right."""
    align = [":--"] * text_columns + ["--:"] * (len(header) - text_columns)
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write benchmark results as indented JSON, creating the parent folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def add_common_args(p: argparse.ArgumentParser, warmup: int, warmup_help: str,
                    iters_help: str) -> None:
    """The flags every model benchmark shares: batch sizes, threads, warm-up, iterations."""
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--threads", type=int, default=2,
                   help="torch intra-op threads (default 2, the cores of our dev machine)")
    p.add_argument("--warmup", type=int, default=warmup, help=warmup_help)
    p.add_argument("--iters", type=int, default=10, help=iters_help)
    p.add_argument("--seed", type=int, default=0, help="weight init and input seed")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")


def core_bench_parser(doc: str, iters: int, warmup: int) -> argparse.ArgumentParser:
    """The flags of a benchmark through the serving core (in-process PoseServices on the
    committed repository): repository, iterations, warm-up, JSON output."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--repository", type=Path, default=Path("model_repository"))
    p.add_argument("--iters", type=int, default=iters)
    p.add_argument("--warmup", type=int, default=warmup)
    p.add_argument("--json", type=Path)
    return p


def apply_common_args(args: argparse.Namespace) -> dict[str, Any]:
    """Validate the shared flags, set the torch thread count, and return the machine info."""
    if args.threads < 1 or args.iters < 1 or args.warmup < 0:
        raise SystemExit(f"Need --threads >= 1, --iters >= 1 and --warmup >= 0; got "
                         f"{args.threads}, {args.iters} and {args.warmup}")
    if min(args.batch_sizes) < 1:
        raise SystemExit(f"Batch sizes must be positive, got {args.batch_sizes}")
    import torch

    torch.set_num_threads(args.threads)
    return machine_info()  # at the start: the date is when measuring began
