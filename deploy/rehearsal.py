"""`make rehearsal`: scale-out without a cluster, behind a real L7 balancer (HAProxy).

Three gateways (`serve --backend triton`) and two Tritons (the bundled `tritonserver` serving
the CPU twin, deploy/triton_server.py) as local processes, with Debian's HAProxy in front of
both tiers, and continuous REST and gRPC load (bench.loadgen's open loop) through it while
the rehearsal

1. measures the steady state: requests per replica, read from each replica's own metrics;
2. SIGKILLs one gateway and one Triton, and compares the failed requests with those that were
   in flight on the killed processes at that moment;
3. restarts every gateway, one by one, as Kubernetes does a rolling update: out of the
   balancer first (HAProxy's runtime API, `state drain`, the analogue of endpoint removal and
   a preStop pause), no requests in flight left, SIGTERM (the gateway drains within
   `--shutdown-grace-s`), started again, ready, back in the balancer; then the same for each
   Triton; the whole round `--rolling-rounds` times (3).

HAProxy balances each request, not each connection: REST (HTTP/1.1) and gRPC (HTTP/2, `proto
h2` to the gateways' gRPC ports) across the gateways, and every Triton RPC of every gateway
across the Tritons (a gRPC frontend of its own, which the gateways use as their `--triton-url`).
A TCP balancer, like a Kubernetes ClusterIP Service, would pin each gateway's one HTTP/2
connection, and so all its traffic, to one Triton. Health checks: the gateways'
`/health/ready`; each Triton's HTTP model-ready URL (traffic goes to its gRPC port). Retries:
only `conn-failure` (the request never reached a server, so a POST is safe to send again) with
`option redispatch` (to another server). A request whose server dies while working on it is
not retried: past `tune.bufsize` HAProxy cannot replay a body at all, and a gRPC error travels
in trailers of an HTTP 200, which only the client can judge.

Everything binds to 127.0.0.1 on free ports; each process logs to a file in the work
directory (build/rehearsal/ by default), HAProxy one line per request it completed (with the
server and its retries; HAProxy 2.6 wrote none for a request whose server died under it, so the
requests in flight at a kill are read from its runtime API instead). Results: JSON and a
table.

    python -m deploy.rehearsal --json bench/results/rehearsal/rehearsal.json
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import math
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import loadgen
from bench.report import base_info, markdown_table, write_json
from deploy.stack import (
    _stop,
    default_model_repository,
    gateway_command,
    keep_ports_off,
    spawn_logged,
    wait_ready,
)
from deploy.triton_server import DEFAULT_VENV, TritonServer, free_port, missing_reason
from posecontract.triton import ServingOptions, write_cpu_twin
from service.cpus import spare_cpu_threads

ROOT = Path(__file__).resolve().parents[1]
REST_BACKEND, GRPC_BACKEND, TRITON_BACKEND = "gateways_rest", "gateways_grpc", "tritons"
PREDICT_ROUTES = ("/v1/predict", "/pose.v1.PoseService/Predict")

# One line per request: end time (Unix ms), frontend, backend, server, HTTP status, active time
# (ms), termination state, retries ("+" when redispatched), method and path.
LOG_FORMAT = "%[date(0,ms)] %ft %b %s %ST %Ta %ts %rc %HM %HP"


def haproxy_missing() -> str | None:
    """Why HAProxy cannot run here, or None when it can."""
    return None if shutil.which("haproxy") else "no `haproxy` (Debian: apt-get install haproxy)"


# ------------------------------------------------------------------------------ HAProxy config


@dataclass(frozen=True)
class GatewayPorts:
    name: str
    port: int       # REST, also its health check
    grpc_port: int


@dataclass(frozen=True)
class TritonPorts:
    name: str
    grpc_port: int  # traffic
    http_port: int  # model-ready health check


@dataclass(frozen=True)
class BalancerPorts:
    rest: int
    grpc: int
    triton: int
    stats: int  # HAProxy's stats page and its Prometheus exporter (/metrics)


def render_haproxy_config(ports: BalancerPorts, socket_path: Path,
                          gateways: Sequence[GatewayPorts], tritons: Sequence[TritonPorts],
                          model_name: str, check_interval_ms: int = 1000) -> str:
    """The HAProxy configuration of the rehearsal (also `haproxy -c -f` in the tests)."""
    inter = f"{check_interval_ms}ms"
    lines = [
        "# Written by deploy/rehearsal.py; every port is on 127.0.0.1.",
        "global",
        "    log stdout format raw local0",
        # The runtime API: `set server <backend>/<server> state drain|maint|ready`, `show stat`.
        f"    stats socket {socket_path} mode 600 level admin",
        "    stats timeout 30s",
        "    nbthread 1  # the machine is small; one thread forwards thousands of requests/s",
        "    maxconn 4096",
        "",
        "defaults",
        "    mode http",
        "    log global",
        f'    log-format "{LOG_FORMAT}"',
        "    option dontlognull",
        "    timeout connect 1s",
        "    timeout client 5m",
        "    timeout server 2m",
        "    timeout http-request 30s",
        "    timeout http-keep-alive 60s",
        "    timeout check 2s",
        # Sent again, to another server, only when the connection failed: the request never
        # reached a server. Not on empty-response/response-timeout/5xx: a POST the server may
        # have run, bodies past tune.bufsize cannot be replayed, and gRPC errors are trailers.
        "    retries 3",
        "    retry-on conn-failure",
        "    option redispatch 1",
        # Checks every second; two failures mark a server down, two successes up again.
        f"    default-server inter {inter} fastinter {inter} downinter {inter} fall 2 rise 2",
        "",
        "frontend rest",
        f"    bind 127.0.0.1:{ports.rest}",
        f"    default_backend {REST_BACKEND}",
        "",
        "frontend grpc",
        f"    bind 127.0.0.1:{ports.grpc} proto h2",
        f"    default_backend {GRPC_BACKEND}",
        "",
        "frontend triton_grpc",
        f"    bind 127.0.0.1:{ports.triton} proto h2",
        f"    default_backend {TRITON_BACKEND}",
        "",
        "frontend stats",
        f"    bind 127.0.0.1:{ports.stats}",
        "    http-request use-service prometheus-exporter if { path /metrics }",
        "    stats enable",
        "    stats uri /",
        "    stats refresh 5s",
        "",
        f"backend {REST_BACKEND}",
        "    balance roundrobin",
        "    option httpchk",
        "    http-check send meth GET uri /health/ready",
        "    http-check expect status 200",
    ]
    lines += [f"    server {g.name} 127.0.0.1:{g.port} check" for g in gateways]
    lines += [
        "",
        f"backend {GRPC_BACKEND}",
        "    balance roundrobin",
        # A gateway's gRPC server follows the health of its REST server: one process.
    ]
    lines += [f"    server {g.name} 127.0.0.1:{g.grpc_port} proto h2 track {REST_BACKEND}/{g.name}"
              for g in gateways]
    lines += [
        "",
        f"backend {TRITON_BACKEND}",
        "    balance roundrobin",
        "    option httpchk",
        f"    http-check send meth GET uri /v2/models/{model_name}/ready",
        "    http-check expect status 200",
    ]
    # Traffic in HTTP/2 to the gRPC port; the check in HTTP/1.1 to the HTTP port.
    lines += [f"    server {t.name} 127.0.0.1:{t.grpc_port} proto h2 check port {t.http_port} "
              "check-proto h1" for t in tritons]
    return "\n".join(lines) + "\n"


def check_haproxy_config(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True)


class RuntimeAPI:
    """HAProxy's runtime API on its stats socket: one command per connection."""

    def __init__(self, socket_path: Path):
        self.socket_path = socket_path

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.socket_path))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while data := s.recv(65536):
                chunks.append(data)
        return b"".join(chunks).decode()

    def set_state(self, backend: str, server: str, state: str) -> None:
        """`ready`, `drain` (no new requests, those in flight finish) or `maint`."""
        answer = self.command(f"set server {backend}/{server} state {state}").strip()
        if answer:
            raise RuntimeError(f"HAProxy refused `{state}` for {backend}/{server}: {answer}")

    def stats(self) -> dict[tuple[str, str], dict[str, str]]:
        """`show stat`, keyed by (backend or frontend, server)."""
        text = self.command("show stat").lstrip("# ")
        return {(row["pxname"], row["svname"]): row for row in csv.DictReader(io.StringIO(text))}

    def in_flight(self, server: str, backends: Iterable[str]) -> int:
        """Requests (HTTP/2 streams included) the server is working on, over `backends`."""
        stats = self.stats()
        return sum(int(stats[(b, server)]["scur"] or 0) for b in backends)

    def status(self, backend: str, server: str) -> str:
        return self.stats()[(backend, server)]["status"]


@dataclass(frozen=True)
class LogLine:
    """One request as HAProxy logged it (times in Unix seconds)."""

    ended: float
    frontend: str
    backend: str
    server: str
    status: str
    active_s: float
    termination: str
    retries: str
    path: str

    @property
    def started(self) -> float:
        return self.ended - self.active_s


def read_haproxy_log(path: Path) -> list[LogLine]:
    """The request lines of HAProxy's log (other lines, e.g. server state changes, skipped)."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) != 10 or not parts[0].isdigit():
            continue
        ended, frontend, backend, server, status, active, term, retries, _, path_ = parts
        out.append(LogLine(int(ended) / 1000, frontend, backend, server, status,
                           max(0, int(active)) / 1000, term, retries, path_))
    return out


# ------------------------------------------------------------------------------ the processes


def _free_port(taken: set[int]) -> int:
    while (port := free_port()) in taken:
        pass
    taken.add(port)
    return port


@dataclass
class Gateway:
    ports: GatewayPorts
    log_path: Path
    process: subprocess.Popen | None = None

    @property
    def name(self) -> str:
        return self.ports.name

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports.port}"


@dataclass
class Cluster:
    """Gateways and Tritons behind HAProxy on loopback; `start` returns once all are ready.

    `model_repository/model_name` is the production export; its CPU twin goes to
    `workdir/twin_repository` with `triton_threads` torch threads per Triton.
    """

    model_repository: Path
    model_name: str
    workdir: Path
    gateways: int = 3
    tritons: int = 2
    venv: Path = DEFAULT_VENV
    triton_threads: int = 1
    shutdown_grace_s: float = 10.0
    start_timeout_s: float = 180.0

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        self.triton_servers: list[TritonServer] = []
        self.gateway_procs: list[Gateway] = []
        self.haproxy: subprocess.Popen | None = None
        self.ports: BalancerPorts | None = None
        self.socket_path = self.workdir / "haproxy.sock"
        self.config_path = self.workdir / "haproxy.cfg"
        self.haproxy_log = self.workdir / "haproxy.log"
        self.api = RuntimeAPI(self.socket_path)

    # -- addresses

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.rest}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.ports.grpc}"

    @property
    def triton_target(self) -> str:
        return f"127.0.0.1:{self.ports.triton}"

    @property
    def stats_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.stats}/"

    def triton_name(self, i: int) -> str:
        return f"triton{i}"

    # -- life

    def _plan(self) -> None:
        """Every port, chosen free now and distinct; the CPU twin; the HAProxy config."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        twin = self.workdir / "twin_repository"
        write_cpu_twin(self.model_repository, self.model_name, twin,
                       ServingOptions(warmup_batch_sizes=(1,),
                                      intra_op_threads=self.triton_threads))
        taken: set[int] = set()
        for i in range(self.tritons):
            server = TritonServer(twin, self.workdir / self.triton_name(i), (self.model_name,),
                                  self.venv)
            keep_ports_off(server, taken)
            self.triton_servers.append(server)
        for i in range(self.gateways):
            ports = GatewayPorts(f"gw{i}", _free_port(taken), _free_port(taken))
            self.gateway_procs.append(Gateway(ports, self.workdir / f"gateway-{i}.log"))
        self.ports = BalancerPorts(*(_free_port(taken) for _ in range(4)))
        self.config_path.write_text(render_haproxy_config(
            self.ports, self.socket_path, [g.ports for g in self.gateway_procs],
            [TritonPorts(self.triton_name(i), t.grpc_port, t.http_port)
             for i, t in enumerate(self.triton_servers)], self.model_name))

    def start(self) -> None:
        reason = missing_reason(self.venv) or haproxy_missing()
        if reason is not None:
            raise RuntimeError(f"The rehearsal cannot run: {reason}")
        try:
            self._plan()
            checked = check_haproxy_config(self.config_path)
            if checked.returncode != 0:
                raise RuntimeError(f"haproxy -c rejects {self.config_path}:\n{checked.stderr}")
            with ThreadPoolExecutor(self.tritons) as pool:  # both load the model at once
                list(pool.map(self.start_triton, range(self.tritons)))
            self._start_haproxy()
            for i in range(self.gateways):
                self.spawn_gateway(i)
            for i in range(self.gateways):
                self.wait_gateway(i)
            self.wait_in_rotation()
        except BaseException:
            self.stop()
            raise

    def _start_haproxy(self) -> None:
        self.socket_path.unlink(missing_ok=True)
        log = self.haproxy_log.open("ab")
        with log:
            self.haproxy = subprocess.Popen(
                ["haproxy", "-db", "-f", str(self.config_path)], stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        began = time.monotonic()
        while not self.socket_path.exists():
            if self.haproxy.poll() is not None or time.monotonic() - began > 10:
                raise RuntimeError(f"haproxy did not start; see {self.haproxy_log}")
            time.sleep(0.05)

    def start_triton(self, i: int) -> None:
        self.triton_servers[i].start(self.start_timeout_s)

    def spawn_gateway(self, i: int) -> None:
        g = self.gateway_procs[i]
        command = gateway_command(
            self.triton_target, self.model_name, g.ports.port, g.ports.grpc_port,
            "--detector-model", "",  # requests carry their box: no detector needed
            "--shutdown-grace-s", str(self.shutdown_grace_s),
            "--triton-start-timeout-s", str(self.start_timeout_s))
        g.process = spawn_logged(command, g.log_path, start_new_session=True)

    def wait_gateway(self, i: int) -> float:
        """Wait for gateway `i` to be ready (its own /health/ready); return the seconds taken."""
        g = self.gateway_procs[i]
        return wait_ready(g.name, g.process, g.url + "/health/ready", g.log_path,
                          self.start_timeout_s)

    def wait_in_rotation(self, timeout_s: float = 30.0) -> None:
        """Wait until HAProxy's checks see every server UP."""
        deadline = time.monotonic() + timeout_s
        while True:
            stats = self.api.stats()
            down = [f"{b}/{s}" for (b, s), row in stats.items()
                    if b in (REST_BACKEND, GRPC_BACKEND, TRITON_BACKEND)
                    and s not in ("FRONTEND", "BACKEND") and row["status"] != "UP"]
            if not down:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"not UP in HAProxy after {timeout_s:.0f} s: {down}")
            time.sleep(0.1)

    def kill_gateway(self, i: int) -> None:
        process = self.gateway_procs[i].process
        process.send_signal(signal.SIGKILL)
        process.wait()

    def kill_triton(self, i: int) -> None:
        """SIGKILL the server and its Python stubs (a pod's containers die together)."""
        server = self.triton_servers[i]
        process, server.process = server.process, None
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop_gateway(self, i: int) -> None:
        """SIGTERM and wait: the gateway finishes its requests within its grace period."""
        _stop(self.gateway_procs[i].process, timeout_s=self.shutdown_grace_s + 20)

    def stop(self) -> None:
        """Stop the gateways (they drain), the Tritons, then HAProxy."""
        with ThreadPoolExecutor(max(1, len(self.gateway_procs))) as pool:
            list(pool.map(lambda g: _stop(g.process, timeout_s=self.shutdown_grace_s + 20),
                          self.gateway_procs))
        for server in self.triton_servers:
            server.stop()
        _stop(self.haproxy)
        self.haproxy = None

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- observation

    def replica_metrics(self) -> dict[str, str]:
        """Each replica's own Prometheus endpoint."""
        urls = {g.name: g.url + "/metrics" for g in self.gateway_procs}
        urls.update({self.triton_name(i): t.metrics_url
                     for i, t in enumerate(self.triton_servers)})
        return urls


def replica_requests(samples: dict) -> float:
    """Requests a replica answered, from its own samples: a gateway's predict calls (REST and
    gRPC, every status), or a Triton's successful inference requests (one per batch)."""
    total = 0.0
    for (name, labels), value in samples.items():
        labels = dict(labels)
        if name == "margipose_requests_total" and labels.get("route") in PREDICT_ROUTES:
            total += value
        elif name in ("nv_inference_request_success", "nv_inference_request_success_total"):
            total += value
    return total


def gateway_in_flight(url: str) -> float:
    samples = loadgen.scrape(url + "/metrics")
    return sum(v for (n, _), v in samples.items() if n == "margipose_in_flight_requests")


class CounterWatch:
    """Samples every replica's request counter each `interval_s` in a thread; the increase over
    a time window adds up across restarts (a counter that went down restarted from zero), as
    Prometheus' increase() does. A replica SIGKILLed loses what it counted since its last
    sample."""

    def __init__(self, urls: dict[str, str], interval_s: float = 1.0):
        self.urls, self.interval_s = urls, interval_s
        self.samples: dict[str, list[tuple[float, float]]] = {name: [] for name in urls}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._lock = threading.Lock()

    def sample(self, names: Iterable[str] | None = None) -> None:
        for name in names or self.urls:
            try:
                value = replica_requests(loadgen.scrape(self.urls[name]))
            except (httpx.HTTPError, OSError):
                continue  # down: no sample
            with self._lock:
                self.samples[name].append((time.perf_counter(), value))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def start(self) -> None:
        self.sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def increase(self, name: str, t0: float, t1: float) -> float:
        with self._lock:
            series = sorted(self.samples[name])
        inside = [v for t, v in series if t0 <= t <= t1]
        before = [v for t, v in series if t < t0]
        values = before[-1:] + inside  # from the last value before the window
        return sum(b - a if b >= a else b for a, b in zip(values, values[1:], strict=False))


# ------------------------------------------------------------------------------ load


class Load:
    """REST and gRPC open loops through the balancer (`rate`/2 each, interleaved), in a thread
    of their own until `stop`; every request is recorded with its transport."""

    def __init__(self, rest_url: str, grpc_target: str, payloads: Sequence[loadgen.Payload],
                 rate: float):
        self.rest_url, self.grpc_target, self.payloads, self.rate = \
            rest_url, grpc_target, payloads, rate
        self.records: list[tuple[str, loadgen.RequestRecord]] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        import grpc

        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        half = self.rate / 2
        async with httpx.AsyncClient(base_url=self.rest_url, timeout=60,
                                     limits=httpx.Limits(max_connections=64)) as client, \
                grpc.aio.insecure_channel(self.grpc_target) as channel:
            async def rest() -> None:
                await loadgen.open_loop(loadgen.rest_sender(client), self.payloads, half,
                                        math.inf, stop=self._stop,
                                        on_result=lambda r: self.records.append(("rest", r)))

            async def grpc_() -> None:
                await asyncio.sleep(1 / self.rate)  # between two REST requests
                await loadgen.open_loop(loadgen.grpc_sender(channel), self.payloads, half,
                                        math.inf, stop=self._stop,
                                        on_result=lambda r: self.records.append(("grpc", r)))

            await asyncio.gather(rest(), grpc_())

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()

    def window(self, t0: float, t1: float, transport: str | None = None
               ) -> list[loadgen.RequestRecord]:
        """Requests scheduled in [t0, t1)."""
        return [r for t, r in list(self.records)
                if t0 <= r.started < t1 and transport in (None, t)]


def latency_summary(records: Sequence[loadgen.RequestRecord], seconds: float) -> dict[str, Any]:
    """loadgen's row for a set of requests: counts, errors by status, p50..p99 of successes."""
    result = loadgen.LevelResult("open", len(records) / max(seconds, 1e-9), seconds)
    for r in records:
        result.statuses[r.status] += 1
        if r.ok:
            result.latencies_s.append(r.ended - r.started)
    row = result.summary()
    return {k: row[k] for k in ("requests", "ok", "errors", "p50_ms", "p90_ms", "p99_ms")}


def spread(counts: dict[str, float]) -> dict[str, float]:
    """Deviation of the largest and smallest count from the mean, as fractions of the mean."""
    values = list(counts.values())
    mean = sum(values) / len(values) if values else 0.0
    if mean <= 0:
        return {"mean": mean, "max_dev": math.nan, "min_dev": math.nan}
    return {"mean": mean, "max_dev": max(values) / mean - 1, "min_dev": min(values) / mean - 1}


# ------------------------------------------------------------------------------ the rehearsal


@dataclass
class Rehearsal:
    cluster: Cluster
    load: Load
    watch: CounterWatch
    clock_offset: float  # time.time() - time.perf_counter()
    events: list[dict[str, Any]] = field(default_factory=list)
    phases: list[dict[str, Any]] = field(default_factory=list)
    began: float = field(default_factory=time.perf_counter)

    def event(self, what: str, **details: Any) -> float:
        now = time.perf_counter()
        self.events.append({"t_s": round(now - self.began, 3), "event": what, **details})
        print(f"[{now - self.began:7.1f} s] {what} {details or ''}", flush=True)
        return now

    def mark(self) -> float:
        """A window's edge: every replica's counter sampled now."""
        self.watch.sample()
        return time.perf_counter()

    def phase(self, name: str, t0: float, t1: float, **extra: Any) -> dict[str, Any]:
        """The window's requests (all, REST, gRPC; by scheduled start), failures, and requests
        per replica (by their counters, and by HAProxy's log: ended in the window)."""
        records = self.load.window(t0, t1)
        row: dict[str, Any] = {"phase": name, "t0_s": round(t0 - self.began, 3),
                               "seconds": round(t1 - t0, 3)}
        row.update(latency_summary(records, t1 - t0))
        row["rest"] = latency_summary(self.load.window(t0, t1, "rest"), t1 - t0)
        row["grpc"] = latency_summary(self.load.window(t0, t1, "grpc"), t1 - t0)
        gateways = {g.name: self.watch.increase(g.name, t0, t1)
                    for g in self.cluster.gateway_procs}
        tritons = {self.cluster.triton_name(i): self.watch.increase(self.cluster.triton_name(i),
                                                                     t0, t1)
                   for i in range(self.cluster.tritons)}
        row["gateway_requests"], row["triton_requests"] = gateways, tritons
        row["gateway_spread"], row["triton_spread"] = spread(gateways), spread(tritons)
        # The same from HAProxy's log: requests by server, ended in the window.
        lines = [ln for ln in read_haproxy_log(self.cluster.haproxy_log)
                 if t0 + self.clock_offset <= ln.ended < t1 + self.clock_offset]
        row["haproxy_by_server"] = dict(Counter(f"{ln.backend}/{ln.server}" for ln in lines))
        row["haproxy_retried"] = sum(1 for ln in lines if ln.retries not in ("0", "+0"))
        row.update(extra)
        self.phases.append(row)
        return row


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str,
               interval_s: float = 0.05) -> float:
    began = time.monotonic()
    while not predicate():
        if time.monotonic() - began > timeout_s:
            raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)
    return time.monotonic() - began


def measure_capacity(rest_url: str, payloads: Sequence[loadgen.Payload], concurrency: int,
                     seconds: float) -> dict[str, Any]:
    """Closed loop over REST through the balancer: the images/s the whole cluster sustains."""
    async def run() -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=rest_url, timeout=60) as client:
            send = loadgen.rest_sender(client)
            await loadgen.closed_loop(send, payloads, 2, 3.0)  # warm every replica's path
            return (await loadgen.closed_loop(send, payloads, concurrency, seconds)).summary()

    return asyncio.run(run())


def roll(r: Rehearsal, kind: str, i: int, drain_timeout_s: float = 60.0) -> dict[str, Any]:
    """Restart replica `i` as a rolling update does; return its timings."""
    c = r.cluster
    if kind == "gateway":
        name, backends = c.gateway_procs[i].name, (REST_BACKEND, GRPC_BACKEND)
    else:
        name, backends = c.triton_name(i), (TRITON_BACKEND,)
    t = {"replica": name}
    r.event("drain", replica=name)
    for b in backends:
        c.api.set_state(b, name, "drain")
    began = time.monotonic()

    def idle() -> bool:
        if c.api.in_flight(name, backends):
            return False
        return kind != "gateway" or gateway_in_flight(c.gateway_procs[i].url) == 0

    wait_until(idle, drain_timeout_s, f"{name} to finish its requests")
    t["drain_s"] = round(time.monotonic() - began, 3)
    for b in backends:
        c.api.set_state(b, name, "maint")
    r.watch.sample([name])  # its last count before the restart resets it
    r.event("SIGTERM", replica=name)
    began = time.monotonic()
    if kind == "gateway":
        c.stop_gateway(i)
    else:
        c.triton_servers[i].stop()
    t["stop_s"] = round(time.monotonic() - began, 3)
    began = time.monotonic()
    if kind == "gateway":
        c.spawn_gateway(i)
        c.wait_gateway(i)
    else:
        c.start_triton(i)
    t["start_s"] = round(time.monotonic() - began, 3)
    for b in backends:
        c.api.set_state(b, name, "ready")
    wait_until(lambda: all(c.api.status(b, name) == "UP" for b in backends), 30,
               f"{name} UP in HAProxy")
    r.event("back in rotation", replica=name)
    return t


def run(args: argparse.Namespace) -> dict[str, Any]:
    reason = missing_reason(args.venv) or haproxy_missing()
    if reason is not None:
        raise SystemExit(f"The rehearsal cannot run: {reason}")
    repository = args.model_repository or default_model_repository(args.model_name)
    args.triton_threads = args.triton_threads or max(1, spare_cpu_threads() // args.tritons)
    cluster = Cluster(repository.resolve(), args.model_name, args.workdir, args.gateways,
                      args.tritons, args.venv, args.triton_threads, args.shutdown_grace_s)
    payloads = loadgen.load_payloads(args.images)
    started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for log in args.workdir.glob("*.log"):
        log.unlink()  # this run's logs only: HAProxy's is read to count requests in flight
    print(f"starting {args.gateways} gateways and {args.tritons} Tritons behind HAProxy "
          f"(logs in {args.workdir})", flush=True)
    with cluster:
        c = cluster
        print(f"balancer: REST {c.rest_url}, gRPC {c.grpc_target}, Triton gRPC "
              f"{c.triton_target}, stats {c.stats_url}", flush=True)
        capacity = measure_capacity(c.rest_url, payloads, args.capacity_concurrency,
                                    args.capacity_s)
        rate = args.rate or round(args.load_fraction * capacity["images_per_s"], 1)
        print(f"capacity {capacity['images_per_s']:.1f} images/s (REST, c="
              f"{args.capacity_concurrency}); load {rate:g} requests/s, half REST, half gRPC",
              flush=True)
        watch = CounterWatch(c.replica_metrics())
        load = Load(c.rest_url, c.grpc_target, payloads, rate)
        r = Rehearsal(c, load, watch, time.time() - time.perf_counter())
        watch.start()
        load.start()
        try:
            r.event("load started", rate=rate)
            time.sleep(args.warmup_s)

            # 1. steady
            t0 = r.event("steady")
            time.sleep(args.steady_s)
            r.phase("steady", t0, r.mark())

            # 2. kill one gateway and one Triton, each while it works on a request
            gw, tr = c.gateway_procs[-1].name, c.triton_name(c.tritons - 1)
            t_start = r.event("kill")
            kills: dict[str, tuple[float, int]] = {}
            for name, backends, kill in (
                    (gw, (REST_BACKEND, GRPC_BACKEND), lambda: c.kill_gateway(c.gateways - 1)),
                    (tr, (TRITON_BACKEND,), lambda: c.kill_triton(c.tritons - 1))):
                # HAProxy's view, polled: kill the moment a request is on its way there.
                deadline = time.monotonic() + 30
                while (busy := c.api.in_flight(name, backends)) == 0 and \
                        time.monotonic() < deadline:
                    time.sleep(0.005)
                moment = time.perf_counter()
                kill()
                r.event("SIGKILL", replica=name, in_flight=busy)
                kills[name] = (moment, busy)
            t_kill = min(t for t, _ in kills.values())
            time.sleep(args.kill_during_s)
            t_after = r.mark()
            time.sleep(args.kill_after_s)
            t_restart = r.event("restart the killed", replicas=[gw, tr])
            began = time.monotonic()
            c.start_triton(c.tritons - 1)
            c.spawn_gateway(c.gateways - 1)
            c.wait_gateway(c.gateways - 1)
            c.wait_in_rotation()
            r.event("killed back in rotation", seconds=round(time.monotonic() - began, 1))
            time.sleep(args.settle_s)
            t_end = r.mark()
            time.sleep(5)  # let the window's requests end before reading HAProxy's log
            # A failure "on a killed process" was in flight at its kill: started before it,
            # ended after it. Any other failure is one the balancer should have prevented.
            failed = [rec for rec in load.window(t_start, t_end) if not rec.ok]
            at_kill = [rec for rec in failed
                       if any(rec.started <= t <= rec.ended for t, _ in kills.values())]
            in_flight = {name: busy for name, (_, busy) in kills.items()}
            kill = r.phase("kill", t_start, t_end, killed=[gw, tr],
                           in_flight_at_kill=in_flight)
            kill["before"] = latency_summary(load.window(t_start, t_kill), t_kill - t_start)
            kill["during"] = latency_summary(load.window(t_kill, t_after), t_after - t_kill)
            kill["after"] = latency_summary(load.window(t_after, t_restart),
                                            t_restart - t_after)
            kill["recovery"] = latency_summary(load.window(t_restart, t_end), t_end - t_restart)
            kill["failed_in_flight_at_kill"] = len(at_kill)
            kill["failures_beyond_in_flight"] = len(failed) - len(at_kill)

            # 3. rolling restart
            t0 = r.event("rolling restart")
            timings = []
            for _ in range(args.rolling_rounds):
                timings += [roll(r, "gateway", i) for i in range(c.gateways)]
                if args.roll_tritons:
                    timings += [roll(r, "triton", i) for i in range(c.tritons)]
            time.sleep(args.settle_s)
            r.phase("rolling restart", t0, r.mark(), restarts=timings)
            r.event("stop load")
        finally:
            load.stop()
            watch.stop()
        final_states = {f"{b}/{s}": row["status"] for (b, s), row in c.api.stats().items()
                        if s not in ("FRONTEND", "BACKEND")}
    return {
        "started_at": started_at,
        "machine": base_info(),
        "topology": {"gateways": args.gateways, "tritons": args.tritons,
                     "triton_intra_op_threads": args.triton_threads,
                     "model": args.model_name, "repository": str(repository),
                     "haproxy": haproxy_version(), "shutdown_grace_s": args.shutdown_grace_s},
        "capacity": capacity, "rate": rate, "phases": r.phases, "events": r.events,
        "final_states": final_states,
    }


def haproxy_version() -> str:
    out = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout
    return out.split("\n")[0].removeprefix("HAProxy version ").split(" ")[0]


def report(result: dict[str, Any]) -> str:
    """The phases as a markdown table."""
    header = ["phase", "s", "requests", "failed", "by status", "p50 ms", "p90 ms", "p99 ms",
              "gateways", "spread", "tritons", "spread"]
    body = []

    def fmt(counts: dict[str, float]) -> str:
        return " / ".join(f"{v:.0f}" for v in counts.values())

    def dev(s: dict[str, float]) -> str:
        return "" if math.isnan(s["max_dev"]) else f"{s['max_dev']:+.0%} {s['min_dev']:+.0%}"

    rows: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
    for p in result["phases"]:
        rows.append((p["phase"], p, p))
        for part in ("before", "during", "after", "recovery"):
            if part in p:
                rows.append((f"  {part}", p[part], None))
    for name, r, p in rows:
        errors = r["errors"]
        body.append([
            name, "" if p is None else f"{p['seconds']:.0f}", str(r["requests"]),
            str(sum(errors.values())), " ".join(f"{k}:{v}" for k, v in errors.items()),
            *(f"{r[k]:.0f}" for k in ("p50_ms", "p90_ms", "p99_ms")),
            "" if p is None else fmt(p["gateway_requests"]),
            "" if p is None else dev(p["gateway_spread"]),
            "" if p is None else fmt(p["triton_requests"]),
            "" if p is None else dev(p["triton_spread"]),
        ])
    return markdown_table(header, body, text_columns=1)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Scale-out rehearsal: gateways and Tritons behind "
                                            "HAProxy, steady / kill / rolling restart.")
    p.add_argument("--model-name", default="margipose-lite")
    p.add_argument("--model-repository", type=Path,
                   help="production repository (default: model_repository/, else build/)")
    p.add_argument("--workdir", type=Path, default=ROOT / "build" / "rehearsal")
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="nvidia-pytriton's venv")
    p.add_argument("--gateways", type=int, default=3)
    p.add_argument("--tritons", type=int, default=2)
    p.add_argument("--triton-threads", type=int, default=0,
                   help="torch intra-op threads per Triton (default: the CPUs a gateway "
                        "leaves, shared by the Tritons, at least 1; 1 on 2 cores)")
    p.add_argument("--shutdown-grace-s", type=float, default=10.0)
    p.add_argument("--images", nargs="+", type=Path, default=loadgen.DEFAULT_IMAGES)
    p.add_argument("--rate", type=float, default=0.0,
                   help="requests/s, half REST, half gRPC (default: --load-fraction of the "
                        "measured capacity)")
    p.add_argument("--load-fraction", type=float, default=0.3)
    p.add_argument("--capacity-s", type=float, default=10.0)
    p.add_argument("--capacity-concurrency", type=int, default=4)
    p.add_argument("--warmup-s", type=float, default=5.0)
    p.add_argument("--steady-s", type=float, default=60.0)
    p.add_argument("--kill-during-s", type=float, default=10.0,
                   help="the window right after the kill")
    p.add_argument("--kill-after-s", type=float, default=20.0,
                   help="then this long with the killed processes down")
    p.add_argument("--settle-s", type=float, default=5.0)
    p.add_argument("--rolling-rounds", type=int, default=3,
                   help="rolling restarts of the whole cluster, one after another")
    p.add_argument("--no-roll-tritons", dest="roll_tritons", action="store_false",
                   help="restart only the gateways in phase 3")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "rehearsal" /
                   "rehearsal.json")
    return p


def main(argv: list[str] | None = None) -> None:
    args = get_args_parser().parse_args(argv)
    args.workdir = args.workdir.resolve()
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    result = run(args)
    write_json(args.json, result)
    print(report(result))
    kill = next(p for p in result["phases"] if p["phase"] == "kill")
    print(f"kill: HAProxy's requests in flight on the killed at that moment "
          f"{kill['in_flight_at_kill']}; failed requests in flight at a kill "
          f"{kill['failed_in_flight_at_kill']}, failed beyond those "
          f"{kill['failures_beyond_in_flight']}")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
