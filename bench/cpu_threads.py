"""Torch threads of the model server beside the gateway: latency, and stalls under a CPU neighbour.

    python -m bench.cpu_threads --json bench/results/cpu_threads.json   # ~12 min

For each backend (`local`: torch in the gateway; `triton`: Triton's CPU twin behind the gateway)
and each torch thread count (`--threads`, taken in turn, `--rounds` times), the topology of
`bench.reliability` is started afresh; its capacity is measured (closed loop, 8 clients, with
the thread count under test), then an open loop runs at `--load` of that capacity for
`--seconds`. During the spans of `--hog-spans` ("START+SECONDS", from the loop's start) as many
CPU-bound processes as the machine has CPUs spin beside it, as a neighbour taking the cores (or
a hypervisor stealing them) would. Every request carries `timeout_s` = `--deadline-s`.

Reported per run: capacity; statuses; served latency p50 / p99 / max, over the whole loop, over
the requests started outside the hog spans and the `--settle-s` after each (quiet), and over
the rest (noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import loadgen
from bench.reliability import Recorder, summary
from bench.report import describe_machine, machine_info, write_json
from bench.serving import Spawned, gateway_command
from deploy.triton_server import TritonServer, free_port, missing_reason

SPIN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


def parse_span(text: str) -> tuple[float, float]:
    start, _, seconds = text.partition("+")
    try:
        span = float(start), float(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a hog span is START+SECONDS, got {text!r}") from None
    if span[0] < 0 or span[1] <= 0:
        raise argparse.ArgumentTypeError(f"a hog span needs START >= 0, SECONDS > 0: {text!r}")
    return span


def in_spans(t: float, spans: list[tuple[float, float]], settle_s: float) -> bool:
    """Whether `t` (seconds from the loop's start) falls in a span or the settling after it."""
    return any(start <= t < start + seconds + settle_s for start, seconds in spans)


async def hog(began: float, spans: list[tuple[float, float]], processes: int) -> None:
    """Spin `processes` CPU-bound interpreters during each span (times from `began`)."""
    for start, seconds in spans:
        await asyncio.sleep(max(0.0, began + start - time.perf_counter()))
        spinners = [subprocess.Popen([sys.executable, "-c", SPIN.format(seconds=seconds)])
                    for _ in range(processes)]
        while any(p.poll() is None for p in spinners):
            await asyncio.sleep(0.1)


async def measure(url: str, args: argparse.Namespace, payloads) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        await Recorder(client, payloads, 60).open_loop(2, 3)  # warm: the first calls are slow
        cap = await loadgen.closed_loop(loadgen.rest_sender(client), payloads, 8, args.capacity_s)
        capacity = cap.ok / cap.duration_s
        rec = Recorder(client, payloads, args.deadline_s)
        began = time.perf_counter()
        records, _ = await asyncio.gather(rec.open_loop(args.load * capacity, args.seconds),
                                          hog(began, args.hog_spans, args.hogs))
    noisy = [r for r in records if in_spans(r["t"] - began, args.hog_spans, args.settle_s)]
    quiet = [r for r in records if not in_spans(r["t"] - began, args.hog_spans, args.settle_s)]
    return {"capacity": capacity, "capacity_statuses": dict(cap.statuses),
            "rate": args.load * capacity, **summary(records),
            "quiet": summary(quiet), "noisy": summary(noisy)}


def run_one(backend: str, threads: int, args: argparse.Namespace, repository: Path, payloads,
            workdir: Path) -> dict[str, Any]:
    from posecontract.triton import ServingOptions, write_cpu_twin

    port, grpc_port = free_port(), free_port()
    flags = ["--max-queue", str(args.max_queue), "--max-batch-size", str(args.max_batch_size),
             "--request-timeout-s", str(args.deadline_s)]
    work = Path(tempfile.mkdtemp(prefix=f"{backend}-{threads}-", dir=workdir))
    with contextlib.ExitStack() as stack:
        if backend == "local":
            flags += ["--torch-threads", str(threads)]
        else:
            write_cpu_twin(repository, args.model_name, work / "twin",
                           ServingOptions(warmup_batch_sizes=(1,), intra_op_threads=threads))
            triton = stack.enter_context(
                TritonServer(work / "twin", work / "triton", (args.model_name,)))
            flags += ["--backend", "triton", "--triton-url", f"127.0.0.1:{triton.grpc_port}",
                      "--max-concurrent-batches", "2"]
        command = gateway_command(repository, args.model_name, port, grpc_port, flags)
        stack.enter_context(Spawned(command, f"http://127.0.0.1:{port}/health/ready", work,
                                    "gateway"))
        row = asyncio.run(measure(f"http://127.0.0.1:{port}", args, payloads))
    return {"backend": backend, "threads": threads, **row}


def report(result: dict[str, Any]) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    lines = [f"Measured {describe_machine(result['machine'])}.", "",
             "| backend | torch threads | capacity (img/s) | statuses | p50 / p99 / max ms | "
             "quiet p50 / p99 ms | noisy p99 / max ms |",
             "| :-- | --: | --: | :-- | :-- | :-- | :-- |"]
    for r in result["rows"]:
        q, n = r["quiet"], r["noisy"]
        lines.append(
            f"| {r['backend']} | {r['threads']} | {r['capacity']:.1f} | {r['statuses']} | "
            f"{ms(r['ok_p50_ms'])} / {ms(r['ok_p99_ms'])} / {ms(r['max_latency_ms'])} | "
            f"{ms(q['ok_p50_ms'])} / {ms(q['ok_p99_ms'])} | "
            f"{ms(n['ok_p99_ms'])} / {ms(n['max_latency_ms'])} |")
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backends", nargs="+", choices=["local", "triton"],
                   default=["local", "triton"])
    p.add_argument("--threads", nargs="+", type=int, default=[2, 1])
    p.add_argument("--rounds", type=int, default=1, help="times through every combination")
    p.add_argument("--model-name", default="margipose-lite")
    p.add_argument("--model-repository", type=Path)
    p.add_argument("--images", nargs="+", type=Path, default=loadgen.DEFAULT_IMAGES)
    p.add_argument("--capacity-s", type=float, default=15.0)
    p.add_argument("--load", type=float, default=0.8, help="open-loop rate / capacity")
    p.add_argument("--seconds", type=float, default=90.0)
    p.add_argument("--hog-spans", nargs="*", type=parse_span,
                   default=[(20.0, 3.0), (50.0, 3.0), (75.0, 5.0)])
    p.add_argument("--hogs", type=int, default=os.cpu_count() or 1,
                   help="spinning processes during each span (default: the CPUs)")
    p.add_argument("--settle-s", type=float, default=5.0,
                   help="after each span, seconds still counted as noisy")
    p.add_argument("--deadline-s", type=float, default=2.0)
    p.add_argument("--max-queue", type=int, default=16)
    p.add_argument("--max-batch-size", type=int, default=4)
    p.add_argument("--json", type=Path)
    return p


def main(args: argparse.Namespace) -> dict[str, Any]:
    from deploy.stack import default_model_repository

    if "triton" in args.backends and (reason := missing_reason()) is not None:
        raise SystemExit(f"the triton backend needs the bundled Triton: {reason}")
    repository = args.model_repository or default_model_repository(args.model_name)
    payloads = loadgen.load_payloads(args.images)
    workdir = Path(tempfile.mkdtemp(prefix="bench-cpu-threads-"))
    settings = json.loads(json.dumps(vars(args), default=str))
    result: dict[str, Any] = {"machine": machine_info(), "settings": settings, "rows": []}
    for _ in range(args.rounds):
        for backend in args.backends:
            for threads in args.threads:
                result["rows"].append(run_one(backend, threads, args, repository, payloads,
                                              workdir))
                print(report(result).splitlines()[-1], flush=True)
    print(report(result))
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
