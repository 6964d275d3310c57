"""Reliability suite: soak, overload and faults against a real gateway, with pass/fail checks.

    python -m bench.reliability --json bench/results/reliability.json          # full (~15 min)
    python -m bench.reliability --soak-s 20 --overload-s 10 --json /tmp/r.json  # smoke

Topology (local processes, loopback only): the real Triton (bundled tritonserver, CPU twin of
the model), a fault proxy (deploy/faultproxy.py) in front of Triton's gRPC port, and the gateway
(`serve --backend triton`) pointed at the proxy. With `--backend local` the gateway runs the
embedded backend instead and the fault scenarios that need Triton are skipped.

1. capacity: closed loop at `--capacity-concurrency` for a few seconds -> images/s.
2. soak: open loop at 80% (`--soak-fraction`) of capacity for `--soak-s` seconds; the gateway's
   RSS sampled every second. Pass: no errors, RSS growth over the second half under
   `--max-rss-growth-mb`, p99 of the last fifth within 1.5x (+50 ms) of the first fifth's.
3. overload: open loop at 2x (`--overload-factor`) capacity for `--overload-s`, then 50%
   (`--recovery-fraction`).
   Pass: nothing but 200 and 429; every 429 carries Retry-After and comes back fast (p99 under
   `--max-reject-ms`); accepted requests' p99 under the request deadline; the recovery phase has
   no errors.
4. faults (Triton backend), each with requests carrying `timeout_s` = `--deadline-s`:
   slow backend (answers delayed past the deadline) -> 504s, each within the deadline + 1 s;
   backend killed mid-request (connections aborted, new ones refused) -> 503s fast, readiness
   false, then true again once it is back, with requests succeeding; Triton restarted (the real
   process killed with SIGKILL and started again) -> the same; after each fault: in-flight
   requests and queue depth back to 0 (no leaked slots).

Every request of every scenario must end (answer or error) within its deadline plus a margin:
the suite records the slowest and fails otherwise. Beside the checks, each phase records the
machine's CPU steal (time the hypervisor gave our CPUs to other guests): overall, its worst
10 s, per 30 s of the soak, and for each spell of errors the steal around it (`error_spells`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench import loadgen
from bench.report import describe_machine, machine_info, write_json
from bench.serving import Spawned, gateway_command
from deploy.faultproxy import FaultProxy
from deploy.triton_server import TritonServer, free_port, missing_reason

MARGIN_S = 1.0  # an answer may come this long after its deadline (scheduling, encoding)


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_jiffies() -> tuple[int, int]:
    """(steal, total) CPU time of the whole machine since boot, in jiffies (Linux /proc/stat).

    Steal is time the hypervisor gave this VM's virtual CPUs to someone else: on a shared
    machine it is the noise the latency checks cannot control, so the suite reports it.
    """
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


class Sampler:
    """Every `period_s`, on a thread while in the `with` block: a process's RSS and the CPU steal.

    `samples` are (seconds, RSS MiB); `cpu` are (seconds, steal jiffies, total jiffies).
    """

    def __init__(self, pid: int, period_s: float = 1.0):
        self.pid, self.period_s = pid, period_s
        self.samples: list[tuple[float, float]] = []
        self.cpu: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        began = time.monotonic()
        while not self._stop.is_set():
            t = time.monotonic() - began
            self.samples.append((t, rss_mb(self.pid)))
            self.cpu.append((t, *cpu_jiffies()))
            self._stop.wait(self.period_s)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def steal(self, window_s: float = 10.0) -> dict[str, Any]:
        """CPU steal in percent of the machine's CPU time: overall and in the worst window."""
        return steal_percent(self.cpu, window_s)

    def steal_series(self, step_s: float = 30.0) -> list[float | None]:
        """CPU steal in percent over consecutive `step_s` spans (for a timeline)."""
        out, start = [], 0
        for i, sample in enumerate(self.cpu):
            if sample[0] - self.cpu[start][0] >= step_s or (i == len(self.cpu) - 1 and i > start):
                share = steal_between(self.cpu[start], sample)
                out.append(None if share is None else round(share, 1))
                start = i
        return out


def steal_between(a: tuple[float, int, int], b: tuple[float, int, int]) -> float | None:
    """Steal in percent of the CPU time between two (seconds, steal, total) samples."""
    total = b[2] - a[2]
    return 100.0 * (b[1] - a[1]) / total if total > 0 else None


def steal_percent(cpu: list[tuple[float, int, int]], window_s: float = 10.0
                  ) -> dict[str, Any]:
    """Steal share of CPU time over (seconds, steal, total) samples, overall and worst window."""
    name = f"worst_{window_s:g}s_steal"
    if len(cpu) < 2:
        return {"steal_pct": None, f"{name}_pct": None, f"{name}_ends_at_s": None}
    worst, at, j = None, None, 0
    for i in range(len(cpu)):
        while cpu[i][0] - cpu[j][0] > window_s:
            j += 1
        if cpu[i][0] - cpu[j][0] >= window_s / 2:
            value = steal_between(cpu[j], cpu[i])
            if value is not None and (worst is None or value > worst):
                worst, at = value, round(cpu[i][0], 1)
    return {"steal_pct": steal_between(cpu[0], cpu[-1]), f"{name}_pct": worst,
            f"{name}_ends_at_s": at}


def growth_mb_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of RSS over the second half of the samples, MiB per minute."""
    half = samples[len(samples) // 2:]
    if len(half) < 2:
        return 0.0
    t, m = np.array(half).T
    return float(np.polyfit(t, m, 1)[0] * 60)


class Recorder:
    """Sends requests with a deadline; records (start, latency, status, retry_after) of each."""

    def __init__(self, client: httpx.AsyncClient, payloads, deadline_s: float):
        self.client, self.payloads, self.deadline_s = client, payloads, deadline_s
        self.records: list[dict[str, Any]] = []
        self._n = 0

    async def one(self) -> dict[str, Any]:
        p = self.payloads[self._n % len(self.payloads)]
        self._n += 1
        t0 = time.perf_counter()
        try:
            r = await self.client.post(
                "/v1/predict", content=p.data, headers={"Content-Type": p.content_type},
                params={"boxes": json.dumps([list(b) for b in p.boxes]),
                        "timeout_s": str(self.deadline_s)})
            status, retry = str(r.status_code), r.headers.get("retry-after")
            error = _error_message(r) if r.status_code != 200 else None
        except httpx.TransportError as e:
            status, retry, error = type(e).__name__, None, str(e)
        record = {"t": t0, "latency_s": time.perf_counter() - t0, "status": status,
                  "retry_after": retry, "error": error}
        self.records.append(record)
        return record

    async def open_loop(self, rate: float, seconds: float) -> list[dict[str, Any]]:
        """Requests at `rate`/s for `seconds`; latency counts from each scheduled start."""
        began, count = time.perf_counter(), max(1, int(rate * seconds))
        start = len(self.records)

        async def at(i: int) -> None:
            await asyncio.sleep(max(0.0, began + i / rate - time.perf_counter()))
            await self.one()

        await asyncio.gather(*(at(i) for i in range(count)))
        return self.records[start:]


def _error_message(response: httpx.Response) -> str:
    """The error's message with its numbers blanked, so that alike errors count together."""
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:200]
    return re.sub(r"\d+(\.\d+)?", "#", message)


def summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts by status and by error message, latency percentiles (ms) of successes and of
    rejections."""
    by: dict[str, int] = {}
    errors: dict[str, int] = {}
    for r in records:
        by[r["status"]] = by.get(r["status"], 0) + 1
        if r.get("error"):
            key = f"{r['status']} {r['error']}"
            errors[key] = errors.get(key, 0) + 1

    def pct(rs: list[dict[str, Any]], q: float) -> float | None:
        return float(np.percentile([r["latency_s"] * 1000 for r in rs], q)) if rs else None

    ok = [r for r in records if r["status"] == "200"]
    rejected = [r for r in records if r["status"] == "429"]
    return {"requests": len(records), "statuses": by, "errors": errors, "ok_p50_ms": pct(ok, 50),
            "ok_p99_ms": pct(ok, 99), "rejected_p99_ms": pct(rejected, 99),
            "max_latency_ms": max((r["latency_s"] * 1000 for r in records), default=None)}


def error_times(records: list[dict[str, Any]], ok: frozenset[str] | set[str] = frozenset({"200"}),
                limit: int = 200) -> list[float]:
    """Seconds from the first request's start at which the first `limit` errors started."""
    if not records:
        return []
    t0 = min(r["t"] for r in records)
    return [round(r["t"] - t0, 1) for r in records if r["status"] not in ok][:limit]


def error_spells(times: list[float], cpu: list[tuple[float, int, int]], gap_s: float = 5.0,
                 before_s: float = 10.0) -> list[dict[str, Any]]:
    """Error start times (s) grouped into spells, each error within `gap_s` of the one before,
    with the CPU steal (percent, from `Sampler.cpu` on the same clock) from `before_s` before
    a spell's first error to a second after its last: is the machine's noise beside it?"""
    spells: list[dict[str, Any]] = []
    for t in sorted(times):
        if spells and t - spells[-1]["to_s"] <= gap_s:
            spells[-1]["to_s"] = t
            spells[-1]["errors"] += 1
        else:
            spells.append({"from_s": t, "to_s": t, "errors": 1})
    for spell in spells:
        window = [c for c in cpu if spell["from_s"] - before_s <= c[0] <= spell["to_s"] + 1]
        share = steal_between(window[0], window[-1]) if len(window) > 1 else None
        spell["steal_pct"] = None if share is None else round(share, 1)
    return spells


async def wait_for(predicate: Callable[[], Any], timeout_s: float) -> float:
    """Poll an async predicate until true; return the seconds it took (inf on timeout)."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        if await predicate():
            return time.monotonic() - began
        await asyncio.sleep(0.2)
    return float("inf")


class Suite:
    """The scenarios against one running gateway (and, for faults, its proxy and Triton)."""

    def __init__(self, args: argparse.Namespace, url: str, pid: int, payloads,
                 proxy: FaultProxy | None = None, triton: TritonServer | None = None):
        self.args, self.url, self.pid, self.payloads = args, url, pid, payloads
        self.proxy, self.triton = proxy, triton
        self.results: dict[str, Any] = {}
        self.checks: list[dict[str, Any]] = []

    def check(self, scenario: str, name: str, passed: bool, detail: Any) -> None:
        self.checks.append({"scenario": scenario, "check": name, "passed": bool(passed),
                            "detail": detail})

    async def ready(self, client: httpx.AsyncClient) -> bool:
        return (await client.get("/health/ready")).status_code == 200

    async def gauges(self, client: httpx.AsyncClient) -> dict[str, float]:
        """The gateway's in-flight requests and queued crops, from its own metrics."""
        samples = loadgen.parse_samples((await client.get("/metrics")).text)
        return {name: loadgen._total(samples, f"margipose_{name}")
                for name in ("in_flight_requests", "queue_depth")}

    async def idle(self, client: httpx.AsyncClient) -> bool:
        """No request in flight and nothing queued."""
        return not any((await self.gauges(client)).values())

    def bounded(self, scenario: str, records: list[dict[str, Any]]) -> None:
        worst = max((r["latency_s"] for r in records), default=0.0)
        self.check(scenario, "every request ended within its deadline + margin",
                   worst <= self.args.deadline_s + MARGIN_S, f"slowest {worst * 1000:.0f} ms")

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
        async with httpx.AsyncClient(base_url=self.url, timeout=60, limits=limits) as client:
            capacity = await self.capacity(client)
            await self.soak(client, capacity)
            await self.overload(client, capacity)
            if self.proxy is not None:
                await self.faults(client)
            else:
                self.results["faults"] = "skipped: the fault scenarios need --backend triton"
            self.check("end", "no leaked in-flight or queued requests",
                       await wait_for(lambda: self.idle(client), 10) < 10,
                       await self.gauges(client))

    async def capacity(self, client: httpx.AsyncClient) -> float:
        warm = await self.recovered(client, Recorder(client, self.payloads, 60))
        if warm == float("inf"):
            raise RuntimeError("the gateway never answered a request successfully")
        with Sampler(self.pid) as sampler:
            result = await loadgen.closed_loop(loadgen.rest_sender(client), self.payloads,
                                               self.args.capacity_concurrency,
                                               self.args.capacity_s)
        capacity = result.ok / result.duration_s
        if capacity == 0:
            raise RuntimeError(f"no request succeeded while measuring capacity: "
                               f"{dict(result.statuses)}")
        self.results["capacity"] = {"images_per_s": capacity,
                                    "concurrency": self.args.capacity_concurrency,
                                    "statuses": dict(result.statuses), **sampler.steal()}
        return capacity

    async def soak(self, client: httpx.AsyncClient, capacity: float) -> None:
        rec = Recorder(client, self.payloads, self.args.deadline_s)
        rate = self.args.soak_fraction * capacity
        with Sampler(self.pid) as rss:
            records = await rec.open_loop(rate, self.args.soak_s)
        fifth = max(1, len(records) // 5)
        first, last = summary(records[:fifth]), summary(records[-fifth:])
        growth = growth_mb_per_min(rss.samples)
        errors_at = error_times(records)  # s from the start, to set beside the steal
        self.results["soak"] = {"rate": rate, "seconds": self.args.soak_s, **summary(records),
                                "first_fifth_p99_ms": first["ok_p99_ms"],
                                "last_fifth_p99_ms": last["ok_p99_ms"],
                                "rss_mb_start": rss.samples[0][1], "rss_mb_end": rss.samples[-1][1],
                                "rss_growth_mb_per_min": growth, **rss.steal(),
                                "steal_pct_per_30s": rss.steal_series(),
                                "error_times_s": errors_at,
                                "error_spells": error_spells(errors_at, rss.cpu)}
        s = self.results["soak"]
        self.check("soak", "no errors", set(s["statuses"]) == {"200"}, s["statuses"])
        self.check("soak", "RSS does not grow", growth * self.args.soak_s / 120
                   <= self.args.max_rss_growth_mb, f"{growth:.2f} MiB/min")
        stable = (first["ok_p99_ms"] is not None and last["ok_p99_ms"] is not None
                  and last["ok_p99_ms"] <= 1.5 * first["ok_p99_ms"] + 50)
        self.check("soak", "latency stable (last p99 <= 1.5x first + 50 ms)", stable,
                   f"{first['ok_p99_ms']} -> {last['ok_p99_ms']}")
        self.bounded("soak", records)

    async def overload(self, client: httpx.AsyncClient, capacity: float) -> None:
        rec = Recorder(client, self.payloads, self.args.deadline_s)
        rate = self.args.overload_rate or self.args.overload_factor * capacity
        with Sampler(self.pid) as sampler:
            over = await rec.open_loop(rate, self.args.overload_s)
        after = await rec.open_loop(self.args.recovery_fraction * capacity,
                                    self.args.overload_s)
        s, r = summary(over), summary(after)
        errors_at = error_times(over, ok={"200", "429"})
        self.results["overload"] = {"rate": rate, **s, **sampler.steal(),
                                    "error_times_s": errors_at,
                                    "error_spells": error_spells(errors_at, sampler.cpu),
                                    "recovery": r}
        self.check("overload", "only 200 and 429", set(s["statuses"]) <= {"200", "429"},
                   s["statuses"])
        self.check("overload", "excess rejected with 429", s["statuses"].get("429", 0) > 0,
                   s["statuses"])
        self.check("overload", "every 429 has Retry-After",
                   all(x["retry_after"] for x in over if x["status"] == "429"), "")
        self.check("overload", "rejections are fast",
                   (s["rejected_p99_ms"] or 0) <= self.args.max_reject_ms,
                   f"p99 {s['rejected_p99_ms']} ms")
        self.check("overload", "accepted p99 within the deadline",
                   (s["ok_p99_ms"] or 0) <= self.args.deadline_s * 1000, f"{s['ok_p99_ms']} ms")
        self.check("overload", "recovery below capacity has no errors",
                   set(r["statuses"]) == {"200"}, r["statuses"])
        self.bounded("overload", over + after)

    async def faults(self, client: httpx.AsyncClient) -> None:
        assert self.proxy is not None and self.triton is not None
        rate, seconds = self.args.fault_rate, self.args.fault_s
        out: dict[str, Any] = {}

        # Slow backend: every answer arrives after the deadline.
        rec = Recorder(client, self.payloads, self.args.deadline_s)
        self.proxy.set("slow", self.args.deadline_s + 2)
        slow = await rec.open_loop(rate, seconds)
        self.proxy.set("pass")
        out["slow"] = summary(slow)
        # 504 at the deadline; 429 when the requests stuck behind the slow backend fill the
        # gateway's queue (refused at once, which is right too). Nothing else.
        self.check("slow backend", "answers 504 past the deadline (429 when the queue is full)",
                   set(out["slow"]["statuses"]) <= {"504", "429"}
                   and out["slow"]["statuses"].get("504", 0) > 0, out["slow"]["statuses"])
        self.bounded("slow backend", slow)
        out["slow"]["idle_after_s"] = await wait_for(lambda: self.idle(client), 15)
        self.check("slow backend", "no leaked slots", out["slow"]["idle_after_s"] < 15,
                   await self.gauges(client))
        out["slow"]["recovered_s"] = await self.recovered(client, rec)
        self.check("slow backend", "serves again", out["slow"]["recovered_s"] < 30,
                   out["slow"]["recovered_s"])

        # Backend killed mid-request: in-flight connections aborted, new ones refused.
        rec = Recorder(client, self.payloads, self.args.deadline_s)
        load = asyncio.create_task(rec.open_loop(rate, seconds))
        await asyncio.sleep(seconds / 3)
        with self.proxy.down():
            not_ready = await wait_for(lambda: self._not_ready(client), 10)
            await load
        killed = rec.records
        out["killed"] = {**summary(killed), "not_ready_after_s": not_ready}
        self.check("backend killed", "readiness goes false", not_ready < 10, not_ready)
        self.check("backend killed", "only results or 503",
                   set(out["killed"]["statuses"]) <= {"200", "503", "504"},
                   out["killed"]["statuses"])
        self.bounded("backend killed", killed)
        out["killed"]["recovered_s"] = await self.recovered(client, rec)
        self.check("backend killed", "ready and serving again without a restart",
                   out["killed"]["recovered_s"] < 30, out["killed"]["recovered_s"])

        # Triton restarted: the real process killed (SIGKILL), then started again.
        rec = Recorder(client, self.payloads, self.args.deadline_s)
        load = asyncio.create_task(rec.open_loop(rate, seconds))
        await asyncio.sleep(seconds / 3)
        os.killpg(self.triton.process.pid, signal.SIGKILL)  # the server and its stubs
        self.triton.process.wait()
        self.triton.stop()  # forgets the dead process, so that `start` runs a new one
        not_ready = await wait_for(lambda: self._not_ready(client), 10)
        await load
        await asyncio.to_thread(self.triton.start)
        restarted = rec.records
        out["restarted"] = {**summary(restarted), "not_ready_after_s": not_ready}
        self.check("Triton restarted", "readiness goes false", not_ready < 10, not_ready)
        self.check("Triton restarted", "only results or 503",
                   set(out["restarted"]["statuses"]) <= {"200", "503", "504"},
                   out["restarted"]["statuses"])
        self.bounded("Triton restarted", restarted)
        out["restarted"]["recovered_s"] = await self.recovered(client, rec)
        self.check("Triton restarted", "ready and serving again without a gateway restart",
                   out["restarted"]["recovered_s"] < 60, out["restarted"]["recovered_s"])
        self.results["faults"] = out

    async def _not_ready(self, client: httpx.AsyncClient) -> bool:
        return not await self.ready(client)

    async def recovered(self, client: httpx.AsyncClient, rec: Recorder) -> float:
        """Seconds until readiness is back and a request succeeds."""
        async def ok() -> bool:
            return await self.ready(client) and (await rec.one())["status"] == "200"
        return await wait_for(ok, 60)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from deploy.stack import default_model_repository
    from posecontract.triton import ServingOptions, write_cpu_twin
    from service.cpus import spare_cpu_threads

    repository = args.model_repository or default_model_repository(args.model_name)
    payloads = loadgen.load_payloads(args.images)
    workdir = Path(tempfile.mkdtemp(prefix="bench-reliability-"))
    result: dict[str, Any] = {"machine": machine_info(), "backend": args.backend,
                              "model": args.model_name, "settings": {
                                  k: v for k, v in vars(args).items()
                                  if isinstance(v, int | float | str)}}
    port, grpc_port = free_port(), free_port()
    gateway_flags = ["--max-queue", str(args.max_queue), "--max-batch-size",
                     str(args.max_batch_size), "--request-timeout-s", str(args.deadline_s)]
    threads = args.torch_threads or spare_cpu_threads()
    result["settings"]["inference_threads"] = threads
    if args.backend == "local":
        command = gateway_command(repository, args.model_name, port, grpc_port,
                                  [*gateway_flags, "--torch-threads", str(threads)])
        with Spawned(command, f"http://127.0.0.1:{port}/health/ready", workdir, "gateway") as gw:
            suite = Suite(args, f"http://127.0.0.1:{port}", gw.process.pid, payloads)
            asyncio.run(suite.run())
    else:
        reason = missing_reason()
        if reason is not None:
            raise SystemExit(f"--backend triton needs the bundled Triton: {reason}")
        twin = workdir / "twin"
        write_cpu_twin(repository, args.model_name, twin,
                       ServingOptions(warmup_batch_sizes=(1,), intra_op_threads=threads))
        with TritonServer(twin, workdir / "triton", (args.model_name,)) as triton:
            proxy = FaultProxy(("127.0.0.1", triton.grpc_port)).start()
            try:
                command = gateway_command(
                    repository, args.model_name, port, grpc_port,
                    [*gateway_flags, "--backend", "triton", "--triton-url", proxy.address,
                     "--max-concurrent-batches", "2"])
                with Spawned(command, f"http://127.0.0.1:{port}/health/ready", workdir,
                             "gateway") as gw:
                    suite = Suite(args, f"http://127.0.0.1:{port}", gw.process.pid, payloads,
                                  proxy, triton)
                    asyncio.run(suite.run())
            finally:
                proxy.stop()
    result.update(suite.results)
    result["checks"] = suite.checks
    result["passed"] = all(c["passed"] for c in suite.checks)
    return result


def report(result: dict[str, Any]) -> str:
    lines = [f"Measured {describe_machine(result['machine'])}; backend {result['backend']}.",
             "", "| scenario | check | result | detail |", "| :-- | :-- | :-- | :-- |"]
    for c in result["checks"]:
        lines.append(f"| {c['scenario']} | {c['check']} | {'pass' if c['passed'] else 'FAIL'} "
                     f"| {c['detail']} |")
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backend", choices=["triton", "local"], default="triton")
    p.add_argument("--model-name", default="margipose-lite")
    p.add_argument("--model-repository", type=Path)
    p.add_argument("--images", nargs="+", type=Path, default=loadgen.DEFAULT_IMAGES)
    p.add_argument("--capacity-concurrency", type=int, default=8)
    p.add_argument("--capacity-s", type=float, default=15.0)
    p.add_argument("--soak-s", type=float, default=600.0)
    p.add_argument("--soak-fraction", type=float, default=0.8,
                   help="soak load as a fraction of the measured capacity")
    p.add_argument("--recovery-fraction", type=float, default=0.5,
                   help="load after the overload, as a fraction of capacity")
    p.add_argument("--overload-s", type=float, default=30.0)
    p.add_argument("--overload-factor", type=float, default=2.0,
                   help="overload as a multiple of the measured capacity")
    p.add_argument("--overload-rate", type=float,
                   help="overload in requests/s, instead of a multiple of the capacity")
    p.add_argument("--fault-s", type=float, default=6.0)
    p.add_argument("--fault-rate", type=float, default=4.0, help="requests/s during faults")
    p.add_argument("--deadline-s", type=float, default=2.0, help="each request's timeout_s")
    p.add_argument("--max-queue", type=int, default=16, help="the gateway's crop queue bound")
    p.add_argument("--max-batch-size", type=int, default=4,
                   help="the gateway's max_batch_size: 4 is the measured best on a 2-core CPU "
                        "(BENCHMARKS.md); a 16-crop batch there takes half the 2 s deadline")
    p.add_argument("--torch-threads", type=int, default=0,
                   help="torch intra-op threads of the model server (the gateway's with --backend "
                        "local, Triton's CPU twin otherwise); 0: one fewer than the CPUs, as "
                        "`serve` and `make stack` choose")
    p.add_argument("--max-rss-growth-mb", type=float, default=20.0,
                   help="allowed RSS growth per 2 minutes of soak (second half's slope)")
    p.add_argument("--max-reject-ms", type=float, default=250.0)
    p.add_argument("--json", type=Path)
    return p


def main(args: argparse.Namespace) -> dict[str, Any]:
    result = run(args)
    print(report(result))
    if args.json:
        write_json(args.json, result)
    if not result["passed"]:
        print("reliability checks FAILED", file=sys.stderr)
    return result


if __name__ == "__main__":
    sys.exit(0 if main(get_args_parser().parse_args())["passed"] else 1)
