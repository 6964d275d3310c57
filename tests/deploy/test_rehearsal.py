"""The scale-out rehearsal (deploy/rehearsal.py): its HAProxy config, and a short real run.

The config test renders the balancer for made-up ports and runs `haproxy -c -f` on it. The
cluster test starts two gateways and two real Tritons (the bundled `tritonserver`, CPU twin of
the tiny fixture export) behind HAProxy, sends REST and gRPC predictions through the balancer,
and reads from every replica's own metrics that each one served some; then drains a gateway
through HAProxy's runtime API and checks it gets nothing more. Without `haproxy` these skip,
and fail instead when MARGIPOSE_REQUIRE_DEPLOY_TOOLS=1; without `.venv-triton` the cluster
test skips, and fails instead when MARGIPOSE_REQUIRE_TRITON=1 (CI sets both).
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from bench import loadgen
from deploy.rehearsal import (
    GRPC_BACKEND,
    REST_BACKEND,
    TRITON_BACKEND,
    BalancerPorts,
    Cluster,
    GatewayPorts,
    TritonPorts,
    check_haproxy_config,
    read_haproxy_log,
    render_haproxy_config,
    replica_requests,
)
from deploy.triton_server import missing_reason
from tests.conftest import MODEL_NAME
from tests.deploy.test_stack import require_tool

PHOTOS = loadgen.DEFAULT_IMAGES[:2]


def render(tmp_path: Path) -> Path:
    config = tmp_path / "haproxy.cfg"
    config.write_text(render_haproxy_config(
        BalancerPorts(20001, 20002, 20003, 20004), tmp_path / "haproxy.sock",
        [GatewayPorts("gw0", 20010, 20011), GatewayPorts("gw1", 20012, 20013)],
        [TritonPorts("triton0", 20020, 20021), TritonPorts("triton1", 20022, 20023)],
        "margipose-lite"))
    return config


def test_rendered_haproxy_config_passes_haproxy_check(tmp_path):
    require_tool("haproxy", "Debian: haproxy")
    config = render(tmp_path)
    result = check_haproxy_config(config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr, result.stdout + result.stderr
    text = config.read_text()
    # Per-request balancing over HTTP/2 to the gRPC ports, checks on the HTTP ones.
    assert "server gw0 127.0.0.1:20011 proto h2 track gateways_rest/gw0" in text
    assert "server triton1 127.0.0.1:20022 proto h2 check port 20023 check-proto h1" in text
    assert "uri /v2/models/margipose-lite/ready" in text and "uri /health/ready" in text
    # Only connection failures are retried, elsewhere; nothing binds beyond loopback.
    assert "retry-on conn-failure\n" in text and "option redispatch" in text
    binds = [line.split()[1] for line in text.splitlines() if line.strip().startswith("bind ")]
    assert len(binds) == 4 and all(b.startswith("127.0.0.1:") for b in binds)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, model_repository) -> Iterator[Cluster]:
    require_tool("haproxy", "Debian: haproxy")
    reason = missing_reason()
    if reason is not None:
        if os.environ.get("MARGIPOSE_REQUIRE_TRITON") == "1":
            pytest.fail(f"MARGIPOSE_REQUIRE_TRITON=1 but no bundled Triton: {reason}")
        pytest.skip(f"no bundled Triton: {reason}")
    with Cluster(model_repository, MODEL_NAME, tmp_path_factory.mktemp("rehearsal"),
                 gateways=2, tritons=2, start_timeout_s=120) as running:
        yield running


def counts(cluster: Cluster) -> dict[str, float]:
    return {name: replica_requests(loadgen.scrape(url))
            for name, url in cluster.replica_metrics().items()}


async def send(cluster: Cluster, rest: int, grpc_: int) -> Counter:
    """`rest` REST and `grpc_` gRPC predictions through the balancer, one after another."""
    payloads = loadgen.load_payloads(PHOTOS)
    statuses: Counter = Counter()
    async with httpx.AsyncClient(base_url=cluster.rest_url, timeout=60) as client, \
            grpc.aio.insecure_channel(cluster.grpc_target) as channel:
        for sender, n in ((loadgen.rest_sender(client), rest),
                          (loadgen.grpc_sender(channel), grpc_)):
            for i in range(n):
                statuses[(await sender(payloads[i % len(payloads)]))[0]] += 1
    return statuses


def test_requests_spread_over_every_gateway_and_triton(cluster: Cluster):
    before = counts(cluster)
    statuses = asyncio.run(send(cluster, rest=12, grpc_=12))
    assert statuses == {"200": 12, "OK": 12}, statuses
    served = {name: value - before[name] for name, value in counts(cluster).items()}
    # Round robin per request: each gateway gets half of each transport.
    assert served["gw0"] == served["gw1"] == 12, served
    assert served["triton0"] > 0 and served["triton1"] > 0, served
    # HAProxy's own log agrees: every request went through it, to a named server.
    by_server = Counter(f"{ln.backend}/{ln.server}" for ln in read_haproxy_log(
        cluster.haproxy_log) if ln.path.endswith(("/v1/predict", "/Predict")))
    assert by_server[f"{REST_BACKEND}/gw0"] >= 6 and by_server[f"{GRPC_BACKEND}/gw1"] >= 6
    assert all(cluster.api.status(b, s) == "UP" for b, s in (
        (REST_BACKEND, "gw0"), (GRPC_BACKEND, "gw1"), (TRITON_BACKEND, "triton1")))


def test_a_drained_gateway_gets_no_new_requests(cluster: Cluster):
    cluster.api.set_state(REST_BACKEND, "gw1", "drain")
    cluster.api.set_state(GRPC_BACKEND, "gw1", "drain")
    try:
        before = counts(cluster)
        statuses = asyncio.run(send(cluster, rest=4, grpc_=4))
        served = {name: value - before[name] for name, value in counts(cluster).items()}
        assert statuses == {"200": 4, "OK": 4}, statuses
        assert served["gw1"] == 0 and served["gw0"] == 8, served
        assert cluster.api.in_flight("gw1", (REST_BACKEND, GRPC_BACKEND)) == 0
    finally:
        cluster.api.set_state(REST_BACKEND, "gw1", "ready")
        cluster.api.set_state(GRPC_BACKEND, "gw1", "ready")
