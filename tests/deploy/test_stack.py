"""The deployment: compose and Prometheus configs, and `make stack` end to end.

The stack test starts deploy.stack (the real bundled Triton serving the CPU twin of a tiny
export, the gateway with `--backend triton`, Debian's Prometheus with deploy/prometheus's
prometheus.yml), sends predictions through the gateway and asks Prometheus' HTTP API for both
sides' counters. Without `.venv-triton` or `prometheus` it skips, and fails instead when
MARGIPOSE_REQUIRE_TRITON=1 (CI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from deploy.stack import PROMETHEUS_CONFIG, ROOT, Stack, write_prometheus_dir
from deploy.triton_server import missing_reason
from tests.conftest import MODEL_NAME
from tests.service.conftest import jpeg_bytes

SCRAPE_WAIT_S = 30.0  # a few 2 s scrape intervals, with room for a slow machine


def test_compose_file_wires_the_services():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"triton", "gateway", "prometheus"}

    triton = services["triton"]
    assert triton["image"].startswith("nvcr.io/nvidia/tritonserver:")
    assert "--model-repository=/models" in triton["command"]
    assert "./model_repository:/models:ro" in triton["volumes"]
    assert {p.split(":")[-1] for p in triton["ports"]} >= {"8000", "8001", "8002"}
    (device,) = triton["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert "shm_size" in triton
    assert "/v2/models/margipose-lite/ready" in " ".join(triton["healthcheck"]["test"])

    gateway = services["gateway"]
    assert gateway["build"]["dockerfile"] == "docker/gateway.Dockerfile"
    assert (ROOT / gateway["build"]["dockerfile"]).is_file()
    env = gateway["environment"]
    assert env["MARGIPOSE_BACKEND"] == "triton" and env["MARGIPOSE_TRITON_URL"] == "triton:8001"
    assert env["MARGIPOSE_HOST"] == "0.0.0.0"
    assert gateway["depends_on"] == {"triton": {"condition": "service_healthy"}}
    assert "/health/ready" in " ".join(gateway["healthcheck"]["test"])

    prometheus = services["prometheus"]
    assert prometheus["depends_on"] == {"gateway": {"condition": "service_healthy"}}
    (mount,) = prometheus["volumes"]
    source, target = mount.split(":")[:2]
    assert (ROOT / source).resolve() == PROMETHEUS_CONFIG.parent
    assert f"--config.file={target}/prometheus.yml" in prometheus["command"]
    # The compose targets file names the compose services on their container ports.
    targets = json.loads((PROMETHEUS_CONFIG.parent / "targets" / "compose.json").read_text())
    assert {t for group in targets for t in group["targets"]} == {"gateway:8080", "triton:8002"}


@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="no docker-compose (Debian package) to parse the compose file")
def test_compose_file_passes_docker_compose_config():
    subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                   check=True, capture_output=True, cwd=ROOT)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="no promtool (Debian: prometheus)")
def test_prometheus_config_passes_promtool(tmp_path):
    for config in (PROMETHEUS_CONFIG,
                   write_prometheus_dir(tmp_path, "127.0.0.1:1", "127.0.0.1:2")):
        result = subprocess.run(["promtool", "check", "config", str(config)],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def stack(tmp_path_factory, model_repository) -> Iterator[Stack]:
    reason = missing_reason() or (
        None if shutil.which("prometheus") else "no `prometheus` (Debian: prometheus)")
    if reason is not None:
        if os.environ.get("MARGIPOSE_REQUIRE_TRITON") == "1":
            pytest.fail(f"MARGIPOSE_REQUIRE_TRITON=1 but the stack cannot run: {reason}")
        pytest.skip(f"no local stack: {reason}")
    with Stack(model_repository, MODEL_NAME, tmp_path_factory.mktemp("stack")) as running:
        yield running


def query(prometheus_url: str, promql: str) -> float:
    """Sum of an instant query's values (0 when it matches no series yet)."""
    r = httpx.get(prometheus_url + "/api/v1/query", params={"query": promql}, timeout=5)
    r.raise_for_status()
    body = r.json()
    assert body["status"] == "success", body
    return sum(float(s["value"][1]) for s in body["data"]["result"])


def test_prometheus_scrapes_the_gateway_and_triton(stack: Stack):
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as client:
        for seed in range(3):
            r = client.post("/v1/predict", content=jpeg_bytes(seed=seed),
                            headers={"Content-Type": "image/jpeg"},
                            params={"boxes": json.dumps([[100, 50, 80, 120]])})
            assert r.status_code == 200, r.text
    wanted = {
        "gateway": 'margipose_requests_total{route="/v1/predict",status="200"}',
        "triton": f'nv_inference_count{{model="{MODEL_NAME}"}}',
    }
    deadline = time.monotonic() + SCRAPE_WAIT_S
    seen: dict[str, float] = {}
    while time.monotonic() < deadline:
        seen = {name: query(stack.prometheus_url, q) for name, q in wanted.items()}
        if seen["gateway"] >= 3 and seen["triton"] >= 3:
            break
        time.sleep(0.5)
    assert seen["gateway"] >= 3 and seen["triton"] >= 3, (
        f"after {SCRAPE_WAIT_S:.0f} s Prometheus has {seen}; targets: "
        + httpx.get(stack.prometheus_url + "/api/v1/targets", timeout=5).text)
    # Each job scraped its own service, through the same prometheus.yml as compose.
    assert query(stack.prometheus_url, 'up{job="margipose-gateway"}') == 1
    assert query(stack.prometheus_url, 'up{job="triton"}') == 1
    assert Path(stack.workdir / "gateway.log").is_file()
