"""The reliability suite: its arithmetic, the fault proxy, and a short real run (smoke)."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from pathlib import Path

import pytest

from bench import reliability
from deploy.faultproxy import FaultProxy
from deploy.triton_server import missing_reason
from tests.conftest import MODEL_NAME

SMALL_PHOTO = Path(__file__).resolve().parents[2] / "data" / "photos" / "astronaut.jpg"


def test_rss_growth_is_the_slope_of_the_second_half():
    # Warm-up growth in the first half is ignored; then 0.5 MiB per second = 30 MiB/min.
    samples = [(t, 100 + 10 * t) for t in range(10)] + [(t, 200 + 0.5 * t) for t in range(10, 20)]
    assert reliability.growth_mb_per_min(samples) == pytest.approx(30.0)
    assert reliability.growth_mb_per_min([(0, 1.0)]) == 0.0


def test_summary_counts_statuses_and_splits_latencies():
    records = [{"latency_s": s, "status": st, "retry_after": None}
               for s, st in [(0.1, "200"), (0.2, "200"), (0.01, "429"), (2.0, "504")]]
    out = reliability.summary(records)
    assert out["statuses"] == {"200": 2, "429": 1, "504": 1}
    assert out["ok_p50_ms"] == pytest.approx(150.0)
    assert out["rejected_p99_ms"] == pytest.approx(10.0)
    assert out["max_latency_ms"] == pytest.approx(2000.0)


def test_steal_share_overall_and_in_the_worst_window():
    # 100 jiffies a second; 5 of them stolen for 20 s, then 40 for 10 s, then 5 again.
    cpu, steal = [], 0
    for t in range(41):
        cpu.append((float(t), steal, 100 * t))
        steal += 40 if 20 <= t < 30 else 5
    out = reliability.steal_percent(cpu, window_s=10)
    assert out["steal_pct"] == pytest.approx(100 * (30 * 5 + 10 * 40) / 4000)
    assert out["worst_10s_steal_pct"] == pytest.approx(40.0)
    assert out["worst_10s_steal_ends_at_s"] == 30.0
    assert reliability.steal_percent(cpu[:1])["steal_pct"] is None
    sampler = reliability.Sampler(os.getpid())  # not started: its samples set by hand
    sampler.cpu = cpu
    assert sampler.steal_series(step_s=10) == [5.0, 5.0, 40.0, 5.0]
    steal_now, total_now = reliability.cpu_jiffies()  # this machine's /proc/stat
    assert 0 <= steal_now <= total_now and total_now > 0


def test_error_times_are_seconds_from_the_first_request():
    records = [{"t": 100.0 + t, "status": st} for t, st in
               [(0.0, "200"), (1.24, "429"), (5.0, "200"), (7.06, "504")]]
    assert reliability.error_times(records) == [1.2, 7.1]
    assert reliability.error_times(records, ok={"200", "429"}) == [7.1]
    assert reliability.error_times([]) == []


def test_error_spells_group_errors_and_take_the_steal_beside_them():
    # One sample a second; 100 jiffies each; steal 50 a second from 10 s to 20 s, else 1.
    cpu, steal = [], 0
    for t in range(60):
        cpu.append((float(t), steal, 100 * t))
        steal += 50 if 10 <= t < 20 else 1
    spells = reliability.error_spells([16.0, 15.0, 19.5, 40.0], cpu)
    assert [(s["from_s"], s["to_s"], s["errors"]) for s in spells] == \
        [(15.0, 19.5, 3), (40.0, 40.0, 1)]
    # 5 s to 20.5 s: samples 5..20, 15 s of which 10 at 50 %: 505 of 1,500 jiffies.
    assert spells[0]["steal_pct"] == 33.7
    assert spells[1]["steal_pct"] == 1.0
    assert reliability.error_spells([], cpu) == []
    assert reliability.error_spells([3.0], []) == [
        {"from_s": 3.0, "to_s": 3.0, "errors": 1, "steal_pct": None}]


class EchoServer:
    """A TCP echo server on loopback (the proxy's upstream in the unit test)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)


async def roundtrip(port: int, payload: bytes, timeout: float) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), timeout)
    finally:
        writer.close()


def test_fault_proxy_passes_delays_holds_and_drops():
    echo = EchoServer()
    proxy = FaultProxy(("127.0.0.1", echo.port)).start()
    try:
        assert asyncio.run(roundtrip(proxy.port, b"hello", 2)) == b"hello"

        proxy.set("slow", 0.5)
        began = asyncio.run(_timed(roundtrip(proxy.port, b"slow", 3)))
        assert began >= 0.5

        proxy.set("blackhole")
        with pytest.raises(TimeoutError):
            asyncio.run(roundtrip(proxy.port, b"lost", 0.5))

        proxy.set("pass")
        with proxy.down():
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                asyncio.run(roundtrip(proxy.port, b"refused", 2))
        assert asyncio.run(roundtrip(proxy.port, b"back", 2)) == b"back"
        with pytest.raises(ValueError, match="Unknown mode"):
            proxy.set("flaky")
    finally:
        proxy.stop()


async def _timed(coro) -> float:
    loop = asyncio.get_running_loop()
    began = loop.time()
    await coro
    return loop.time() - began


# What the seconds-long smoke asserts: the mechanisms (rejection with Retry-After, errors of
# the right kind, readiness, recovery, no leaked slots). The timing checks (latency, deadlines
# under load, RSS drift) depend on a quiet machine and minutes of load: they are judged by the
# full run (`python -m bench.reliability`, BENCHMARKS.md), and only reported here.
MECHANISMS = {
    ("overload", "excess rejected with 429"),
    ("overload", "every 429 has Retry-After"),
    ("slow backend", "answers 504 past the deadline (429 when the queue is full)"),
    ("slow backend", "no leaked slots"),
    ("slow backend", "serves again"),
    ("backend killed", "readiness goes false"),
    ("backend killed", "only results or 503"),
    ("backend killed", "ready and serving again without a restart"),
    ("Triton restarted", "readiness goes false"),
    ("Triton restarted", "only results or 503"),
    ("Triton restarted", "ready and serving again without a gateway restart"),
    ("end", "no leaked in-flight or queued requests"),
}


@pytest.mark.slow
def test_reliability_suite_smoke(model_repository, tmp_path):
    """Every scenario, seconds long, against the real gateway, fault proxy and Triton."""
    reason = missing_reason()
    if reason is not None:
        if os.environ.get("MARGIPOSE_REQUIRE_TRITON") == "1":
            pytest.fail(f"MARGIPOSE_REQUIRE_TRITON=1 but no Triton here: {reason}")
        pytest.skip(f"no real Triton: {reason}")
    args = reliability.get_args_parser().parse_args([
        "--model-name", MODEL_NAME, "--model-repository", str(model_repository),
        "--capacity-s", "3", "--soak-s", "4", "--overload-s", "3", "--fault-s", "3",
        # Mechanisms, not performance: light soak and recovery loads, a generous deadline.
        "--soak-fraction", "0.3", "--recovery-fraction", "0.2", "--deadline-s", "5",
        # A queue of two crops and 60 small requests/s: the tiny model's twin cannot keep up,
        # so the overload shows whatever capacity a busy machine measured.
        "--max-queue", "2", "--overload-rate", "60", "--images", str(SMALL_PHOTO),
        "--json", str(tmp_path / "r.json")])
    result = reliability.main(args)
    checks = {(c["scenario"], c["check"]): c for c in result["checks"]}
    scenarios = {s for s, _ in checks}
    assert scenarios == {"soak", "overload", "slow backend", "backend killed",
                         "Triton restarted", "end"}
    assert MECHANISMS <= set(checks), MECHANISMS - set(checks)
    failed = [checks[key] for key in sorted(MECHANISMS) if not checks[key]["passed"]]
    assert failed == [], failed
    assert result["faults"]["killed"]["statuses"].get("503", 0) > 0
    assert result["overload"]["statuses"].get("429", 0) > 0
