"""Serving throughput and latency, every way of serving the model side by side in one run.

    python -m bench.serving --json bench/results/serving.json
    python -m bench.serving --concurrency 1 4 16 --duration 5 --targets gateway-local-rest raw

On one machine and one model (`model_repository/<model>`, else an UNTRAINED export in build/,
which costs the same), one target at a time so they never compete for the cores:

- `raw`: the TorchScript model called in-process at batch 1, 2, 4, 8, 16 (the ceiling);
- `naive`: a plain FastAPI handler running the model per request (bench/naive_server.py);
- `gateway-local-rest`, `gateway-local-grpc`: the gateway (`serve`, embedded backend);
- `triton-direct`: Triton (bundled tritonserver, CPU twin) called with tritonclient on
  precomputed crops, no gateway;
- `gateway-triton-rest`: the gateway with `--backend triton` in front of that Triton;
- `blazepose`: the peer, MediaPipe BlazePose full and heavy (`peers/bench_blazepose.py` in the
  MediaPipe venv), in-process on 256x256 person crops with one and two processes: the figure a
  user compares with, measured in the same run on the same cores.

Each service target runs the same closed-loop levels (bench/loadgen.py) on the same real photos
(data/photos) with one box per request (the whole image), so every target does the same work
per request: decode, one crop, one model pass. Derived figures:

- gateway efficiency: a target's best images/s over the raw model's best images/s;
- gateway overhead at concurrency 1: its p50 latency minus the direct call's (raw batch 1 for
  the embedded backend, `triton-direct` for the Triton backend);
- gateway CPU per request: CPU seconds of the gateway process over a level per request, and the
  part outside inference (for the embedded backend, minus the raw model's CPU per image).

The load generator shares the machine's cores with the server: its own cost is part of every
target alike. Run on a quiet machine; compare ratios from one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from bench import loadgen
from bench.report import describe_machine, machine_info, markdown_table, write_json
from deploy.triton_server import TritonServer, free_port, missing_reason
from posecontract.layout import INPUT

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("raw", "naive", "gateway-local-rest", "gateway-local-grpc", "triton-direct",
           "gateway-triton-rest", "blazepose")
TICKS = os.sysconf("SC_CLK_TCK")
RUNTIME_NAMES = {"torch": "TorchScript", "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def wait_ready(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    """Poll `url` until it answers 200; fail with the log tail if the process dies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[:3]} exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout_s:.0f} s: {log.read_text()[-2000:]}")


class Spawned:
    """A server subprocess with its log, stopped with SIGTERM on exit."""

    def __init__(self, command: list[str], ready_url: str, workdir: Path, name: str):
        self.log = workdir / f"{name}.log"
        self._log = self.log.open("w")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                        cwd=ROOT)
        self.ready_url = ready_url

    def __enter__(self) -> Spawned:
        try:
            wait_ready(self.ready_url, self.process, self.log)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def raw_model(model_path: Path, batch_sizes: Sequence[int], seconds: float, threads: int,
              runtime: str = "torch") -> list[dict[str, Any]]:
    """In-process throughput and CPU time per image at each batch size, the model run by the
    embedded backend's own runtime object (`service.backends.runtimes`), as the gateway runs it."""
    from service.backends.runtimes import open_runtime

    if runtime == "torch":
        torch.set_num_threads(threads)
    model = open_runtime(runtime, model_path, "cpu", threads)
    rows = []
    rng = np.random.default_rng(0)
    for batch in batch_sizes:
        images = rng.integers(0, 256, (batch, *INPUT.dims), np.uint8)
        for _ in range(2):
            model.run(images)
        times, cpu0, began = [], time.process_time(), time.perf_counter()
        while time.perf_counter() - began < seconds or len(times) < 3:
            t0 = time.perf_counter()
            model.run(images)
            times.append(time.perf_counter() - t0)
        cpu = time.process_time() - cpu0
        median = float(np.median(times))
        rows.append({"target": "raw", "runtime": runtime, "batch": batch,
                     "median_ms": median * 1000, "images_per_s": batch / median,
                     "cpu_ms_per_image": 1000 * cpu / (batch * len(times))})
    return rows


async def _levels(send: loadgen.Sender, payloads, args, metrics: Sequence[str],
                  pid: int | None) -> list[dict[str, Any]]:
    """loadgen levels, each also with the server process's CPU per request."""
    await loadgen.closed_loop(send, payloads, 1, args.warmup)
    rows = []
    for c in args.concurrency:
        before = loadgen._scrape_all(metrics)
        cpu0 = process_cpu_s(pid) if pid else 0.0
        result = await loadgen.closed_loop(send, payloads, c, args.duration)
        result.server = loadgen.server_split(before, loadgen._scrape_all(metrics))
        row = result.summary()
        if pid and result.ok:
            row["server_cpu_ms_per_request"] = 1000 * (process_cpu_s(pid) - cpu0) / result.ok
        rows.append(row)
    return rows


def run_rest(url: str, payloads, args, metrics=(), pid=None) -> list[dict[str, Any]]:
    async def go():
        limits = httpx.Limits(max_connections=max(args.concurrency) + 8)
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
            return await _levels(loadgen.rest_sender(client), payloads, args, metrics, pid)
    return asyncio.run(go())


def run_grpc(target: str, payloads, args, metrics=(), pid=None) -> list[dict[str, Any]]:
    import grpc

    async def go():
        async with grpc.aio.insecure_channel(target) as channel:
            return await _levels(loadgen.grpc_sender(channel), payloads, args, metrics, pid)
    return asyncio.run(go())


def run_triton(server: TritonServer, model: str, payloads, args) -> list[dict[str, Any]]:
    from tritonclient.grpc.aio import InferenceServerClient

    crops = loadgen.crops_for(payloads)

    async def go():
        client = InferenceServerClient(server.grpc_url)
        try:
            send = loadgen.triton_sender(client, model, crops)
            return await _levels(send, payloads, args, [server.metrics_url], None)
        finally:
            await client.close()
    return asyncio.run(go())


def gateway_command(model_repository: Path, model: str, port: int, grpc_port: int,
                    extra: Sequence[str] = ()) -> list[str]:
    return [sys.executable, "-m", "service", "--model-repository", str(model_repository),
            "--model-name", model, "--port", str(port), "--grpc-port", str(grpc_port),
            "--log-level", "warning", *extra]


def run_suite(args: argparse.Namespace) -> dict[str, Any]:
    from deploy.stack import default_model_repository
    from posecontract.triton import ServingOptions, write_cpu_twin
    from service.backends.local import resolve_model_file
    from service.backends.runtimes import FILES

    repository = args.model_repository or default_model_repository(args.model_name)
    runtime_files = {rt: resolve_model_file(repository, args.model_name, None, FILES[rt])[0]
                     for rt in args.runtimes}
    if {"naive", "triton-direct", "gateway-triton-rest"} & set(args.targets):
        # The naive server and Triton's CPU twin run the TorchScript file.
        model_path, _ = resolve_model_file(repository, args.model_name, None, "model.pt")
    else:
        model_path = next(iter(runtime_files.values()))
    payloads = loadgen.load_payloads(args.images)
    if args.person_crops:
        payloads = loadgen.person_crop_payloads(payloads)
    workdir = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    result: dict[str, Any] = {"machine": machine_info(), "model": str(model_path),
                              "runtimes": {rt: str(f) for rt, f in runtime_files.items()},
                              "images": [p.name for p in payloads], "rows": [], "raw": [],
                              "skipped": {}, "settings": {
                                  "concurrency": args.concurrency, "duration_s": args.duration,
                                  "person_crops": args.person_crops,
                                  "persons_per_request": 1}}
    rows = result["rows"]

    def tag(target: str, new_rows: list[dict[str, Any]], runtime: str | None = None) -> None:
        for r in new_rows:
            r["target"] = target
            if runtime is not None:
                r["runtime"] = runtime
        rows.extend(new_rows)
        print(loadgen.table(new_rows), flush=True)

    if "raw" in args.targets:
        for runtime, path in runtime_files.items():
            result["raw"] += raw_model(path, args.raw_batch_sizes, args.raw_seconds,
                                       args.threads, runtime)
    if "naive" in args.targets:
        port = free_port()
        with Spawned([sys.executable, "-m", "bench.naive_server", "--model", str(model_path),
                      "--port", str(port), "--threads", str(args.threads)],
                     f"http://127.0.0.1:{port}/docs", workdir, "naive") as naive:
            tag("naive", run_rest(f"http://127.0.0.1:{port}", payloads, args,
                                  pid=naive.process.pid))
    for runtime in args.runtimes if {"gateway-local-rest", "gateway-local-grpc"} & set(
            args.targets) else ():
        port, grpc_port = free_port(), free_port()
        command = gateway_command(repository, args.model_name, port, grpc_port,
                                  ["--torch-threads", str(args.threads), "--runtime", runtime])
        with Spawned(command, f"http://127.0.0.1:{port}/health/ready", workdir,
                     f"gateway-local-{runtime}") as gw:
            metrics = [f"http://127.0.0.1:{port}/metrics"]
            if "gateway-local-rest" in args.targets:
                tag("gateway-local-rest", run_rest(f"http://127.0.0.1:{port}", payloads, args,
                                                   metrics, gw.process.pid), runtime)
            if "gateway-local-grpc" in args.targets:
                tag("gateway-local-grpc", run_grpc(f"127.0.0.1:{grpc_port}", payloads, args,
                                                   metrics, gw.process.pid), runtime)
    if {"triton-direct", "gateway-triton-rest"} & set(args.targets):
        reason = missing_reason()
        if reason is not None:
            for t in ("triton-direct", "gateway-triton-rest"):
                result["skipped"][t] = f"no Triton: {reason}"
        else:
            twin = workdir / "twin"
            write_cpu_twin(repository, args.model_name, twin,
                           ServingOptions(warmup_batch_sizes=(1,), intra_op_threads=args.threads))
            with TritonServer(twin, workdir / "triton", (args.model_name,)) as triton:
                if "triton-direct" in args.targets:
                    tag("triton-direct", run_triton(triton, args.model_name, payloads, args))
                if "gateway-triton-rest" in args.targets:
                    port, grpc_port = free_port(), free_port()
                    command = gateway_command(
                        repository, args.model_name, port, grpc_port,
                        ["--backend", "triton", "--triton-url", triton.grpc_url,
                         "--max-concurrent-batches", "2"])
                    with Spawned(command, f"http://127.0.0.1:{port}/health/ready", workdir,
                                 "gateway-triton") as gw:
                        metrics = [f"http://127.0.0.1:{port}/metrics", triton.metrics_url]
                        tag("gateway-triton-rest", run_rest(
                            f"http://127.0.0.1:{port}", payloads, args, metrics,
                            gw.process.pid))
    if "blazepose" in args.targets:
        try:
            result["blazepose"] = run_blazepose(args.duration, workdir)
        except (FileNotFoundError, RuntimeError) as exc:
            result["skipped"]["blazepose"] = str(exc)
    result["derived"] = derive(result)
    return result


def run_blazepose(seconds: float, workdir: Path) -> list[dict[str, Any]]:
    """BlazePose full and heavy, one and two processes (peers/bench_blazepose.py), as rows of
    {"model", "processes", "images_per_s", "cpu_ms_per_image"}."""
    from peers.blazepose_client import BlazePoseUnavailable, find_venv

    try:
        venv = find_venv()
    except BlazePoseUnavailable as exc:
        raise RuntimeError(f"no BlazePose: {exc}") from exc
    out = workdir / "blazepose.json"
    command = [str(venv / "bin" / "python"), "-m", "peers.bench_blazepose", "--complexities",
               "1", "2", "--processes", "1", "2", "--seconds", str(seconds), "--json", str(out)]
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"peers.bench_blazepose failed: {done.stderr[-2000:]}")
    runs = json.loads(out.read_text())["runs"]
    rows = [{"model": f"blazepose-{r['model']}", "processes": r["processes"],
             "images_per_s": r["images_per_s"], "cpu_ms_per_image": r["cpu_ms_per_image"]}
            for r in runs]
    print(markdown_table(["peer", "processes", "img/s", "CPU ms/img"],
                         [[r["model"], str(r["processes"]), f"{r['images_per_s']:.1f}",
                           f"{r['cpu_ms_per_image']:.1f}"] for r in rows]), flush=True)
    return rows


def _key(row: dict[str, Any]) -> str:
    """A target's name in the derived figures: `target` or `target[runtime]`."""
    return f"{row['target']}[{row['runtime']}]" if row.get("runtime") else row["target"]


STAGES = ("decode", "crop", "queue_wait", "inference", "postprocess")


def stage_breakdown(row: dict[str, Any]) -> dict[str, float] | None:
    """Where one request's time goes at a level, in ms per request, from the gateway's own
    histograms: its stages, the rest of its handling (`gateway_other`: routing, parsing, result
    encoding, event loop), and what lies outside the gateway's clock (`outside_gateway`: the
    client's mean latency minus the gateway's, i.e. transport and the load generator).
    Inference is the batch's time shared by its crops."""
    if "gw_request_ms" not in row or "gw_avg_batch" not in row:
        return None
    out = {"decode": row.get("gw_decode_ms", 0.0), "crop": row.get("gw_crop_ms", 0.0),
           "queue_wait": row.get("gw_queue_wait_ms", 0.0),
           "inference": row["gw_inference_ms_per_batch"],
           "postprocess": row.get("gw_postprocess_ms", 0.0)}
    out["gateway_other"] = row["gw_request_ms"] - sum(out.values())
    out["outside_gateway"] = row["mean_ms"] - row["gw_request_ms"]
    out["client_mean"] = row["mean_ms"]
    return out


def derive(result: dict[str, Any]) -> dict[str, Any]:
    """Efficiency against the raw model run by the same runtime, overhead at c=1, CPU outside
    inference, and the per-stage breakdown of a request at c=1."""
    raw_by_runtime: dict[str, list[dict[str, Any]]] = {}
    for r in result["raw"]:
        raw_by_runtime.setdefault(r.get("runtime", "torch"), []).append(r)
    by_target: dict[str, list[dict[str, Any]]] = {}
    for r in result["rows"]:
        by_target.setdefault(_key(r), []).append(r)
    c1 = {t: next((r for r in rs if r["level"] == 1), None) for t, rs in by_target.items()}
    derived: dict[str, Any] = {}
    for target, rs in by_target.items():
        raw = raw_by_runtime.get(rs[0].get("runtime", "torch"), [])
        best_raw = max((r["images_per_s"] for r in raw), default=None)
        raw_b1 = next((r for r in raw if r["batch"] == 1), None)
        d: dict[str, Any] = {"best_images_per_s": max(r["images_per_s"] for r in rs)}
        if best_raw:
            d["efficiency_vs_raw"] = d["best_images_per_s"] / best_raw
        direct = c1.get("triton-direct") if "triton" in target else None
        if target.startswith("gateway") and c1.get(target):
            if direct is not None:
                d["overhead_ms_c1"] = c1[target]["p50_ms"] - direct["p50_ms"]
            elif raw_b1 is not None and "triton" not in target:
                d["overhead_ms_c1"] = c1[target]["p50_ms"] - raw_b1["median_ms"]
            stages = stage_breakdown(c1[target])
            if stages is not None:
                d["stages_ms_c1"] = stages
        cpu = [r["server_cpu_ms_per_request"] for r in rs if "server_cpu_ms_per_request" in r]
        if cpu:
            d["server_cpu_ms_per_request"] = float(np.median(cpu))
            if target.startswith("gateway"):
                # Triton backend: the gateway runs no inference. Embedded: minus the model's CPU.
                inside = raw_b1["cpu_ms_per_image"] if raw_b1 and "triton" not in target else 0
                d["cpu_ms_outside_inference"] = d["server_cpu_ms_per_request"] - inside
        derived[target] = d
    best_raw = max((r["images_per_s"] for r in result["raw"]), default=None)
    for r in result.get("blazepose", []):
        d = derived.setdefault(r["model"], {"best_images_per_s": 0.0})
        d["best_images_per_s"] = max(d["best_images_per_s"], r["images_per_s"])
        if best_raw:
            d["efficiency_vs_raw"] = d["best_images_per_s"] / best_raw
        d["server_cpu_ms_per_request"] = r["cpu_ms_per_image"]
    return derived


def report(result: dict[str, Any]) -> str:
    lines = [f"Measured {describe_machine(result['machine'])}; model {result['model']}."]
    if result["raw"]:
        lines += ["", markdown_table(
            ["raw model", "batch", "ms/batch", "img/s", "CPU ms/img"],
            [[RUNTIME_NAMES.get(r.get("runtime", "torch"), r.get("runtime")), str(r["batch"]),
              f"{r['median_ms']:.1f}",
              f"{r['images_per_s']:.1f}", f"{r['cpu_ms_per_image']:.1f}"]
             for r in result["raw"]])]
    if result["rows"]:
        lines += ["", loadgen.table([{**r, "target": _key(r)} for r in result["rows"]])]
    if result.get("blazepose"):
        lines += ["", markdown_table(
            ["peer (in-process, 256x256 crops)", "processes", "img/s", "CPU ms/img"],
            [[r["model"], str(r["processes"]), f"{r['images_per_s']:.1f}",
              f"{r['cpu_ms_per_image']:.1f}"] for r in result["blazepose"]])]
    if result["derived"]:
        rows = []
        for target, d in result["derived"].items():
            rows.append([target, f"{d['best_images_per_s']:.1f}",
                         f"{d.get('efficiency_vs_raw', float('nan')):.2f}",
                         f"{d['overhead_ms_c1']:.1f}" if "overhead_ms_c1" in d else "",
                         f"{d['server_cpu_ms_per_request']:.1f}"
                         if "server_cpu_ms_per_request" in d else "",
                         f"{d['cpu_ms_outside_inference']:.1f}"
                         if "cpu_ms_outside_inference" in d else ""])
        lines += ["", markdown_table(
            ["target", "best img/s", "vs raw", "overhead c=1 ms", "server CPU ms/req",
             "CPU ms/req outside inference"], rows)]
    staged = [(t, d["stages_ms_c1"]) for t, d in result["derived"].items()
              if "stages_ms_c1" in d]
    if staged:
        names = (*STAGES, "gateway_other", "outside_gateway", "client_mean")
        lines += ["", markdown_table(
            ["target, c=1, ms per request", *names],
            [[t, *(f"{st[n]:.1f}" for n in names)] for t, st in staged])]
    for target, why in result["skipped"].items():
        lines.append(f"\nskipped {target}: {why}")
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-name", default="margipose-lite")
    p.add_argument("--model-repository", type=Path)
    p.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    p.add_argument("--images", nargs="+", type=Path, default=loadgen.DEFAULT_IMAGES)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    p.add_argument("--duration", type=float, default=10.0, help="seconds per level")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds at c=1 before the levels")
    p.add_argument("--raw-batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--raw-seconds", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=2,
                   help="intra-op threads of every server's runtime")
    p.add_argument("--person-crops", action="store_true",
                   help="send each photo's 256x256 person crop (JPEG) instead of the photo")
    p.add_argument("--runtimes", nargs="+", choices=sorted(RUNTIME_NAMES), default=["torch"],
                   help="runtimes of the raw model and the embedded gateway, each measured")
    p.add_argument("--json", type=Path)
    return p


def main(args: argparse.Namespace) -> dict[str, Any]:
    result = run_suite(args)
    print(report(result))
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
