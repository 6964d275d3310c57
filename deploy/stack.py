"""`make stack`: the compose topology (Triton, gateway, Prometheus) as local processes.

For hosts without Docker, and for CI. Triton is the real `tritonserver` bundled in
nvidia-pytriton (`make triton-env`; deploy/triton_server.py) serving the CPU twin of the model
and, when the repository has it, of the person detector;
the gateway runs `serve --backend triton` against its gRPC port; Prometheus (Debian's
`prometheus`) runs with the same deploy/prometheus/prometheus.yml compose mounts, copied into
the work directory beside a loopback targets file. Everything binds to 127.0.0.1; each
process logs to a file in the work directory (build/stack/ by default). Ctrl-C stops all three.

    python -m deploy.stack --model-name margipose-lite --port 8080 --prometheus-port 9090
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from deploy.triton_server import DEFAULT_VENV, TritonServer, free_port, missing_reason
from posecontract.detection import DETECTOR_NAME, write_detector_twin
from posecontract.triton import ServingOptions, write_cpu_twin
from service.cpus import spare_cpu_threads

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop(process: subprocess.Popen | None, timeout_s: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after `timeout_s`."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def spawn_logged(command: list[str], log_path: Path, **popen) -> subprocess.Popen:
    """Start `command` in the repository root, its output appended to `log_path` after a line
    naming the command."""
    with Path(log_path).open("ab") as log:
        log.write(f"\n==== {' '.join(command)}\n".encode())
        log.flush()
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, **popen)


def wait_ready(name: str, process: subprocess.Popen, url: str, log_path: Path,
               timeout_s: float, began: float | None = None) -> float:
    """Wait until `url` answers 200; raise with the log's tail if `process` exits or
    `timeout_s` passes (counted from `began`) first. Returns the seconds since `began`."""
    began = time.monotonic() if began is None else began
    while not _ok(url):
        if process.poll() is not None or time.monotonic() - began > timeout_s:
            tail = "\n".join(Path(log_path).read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"{name} did not become ready ({url}); {log_path} ends with:\n"
                               f"{tail}")
        time.sleep(0.1)
    return time.monotonic() - began


def gateway_command(triton_url: str, model_name: str, port: int, grpc_port: int,
                    *extra: str) -> list[str]:
    """`python -m service` on loopback with the Triton backend, two batches in flight."""
    return [sys.executable, "-m", "service", "--backend", "triton", "--triton-url", triton_url,
            "--model-name", model_name, "--host", "127.0.0.1", "--port", str(port),
            "--grpc-port", str(grpc_port), "--max-concurrent-batches", "2", *extra]


def keep_ports_off(server: TritonServer, taken: set[int]) -> None:
    """Triton's ports are picked free when it is made, ours are bound later: move its ports
    off `taken`, then add them to it."""
    for attr in ("http_port", "grpc_port", "metrics_port"):
        while getattr(server, attr) in taken:
            setattr(server, attr, free_port())
        taken.add(getattr(server, attr))


def write_prometheus_dir(dest: Path, gateway: str, triton_metrics: str) -> Path:
    """Copy prometheus.yml into `dest` with a loopback targets file beside it; return the config."""
    (dest / "targets").mkdir(parents=True, exist_ok=True)
    config = dest / "prometheus.yml"
    shutil.copyfile(PROMETHEUS_CONFIG, config)
    targets = [{"targets": [gateway], "labels": {"service": "gateway"}},
               {"targets": [triton_metrics], "labels": {"service": "triton"}}]
    (dest / "targets" / "local.json").write_text(json.dumps(targets, indent=2) + "\n")
    return config


@dataclass
class Stack:
    """Triton, the gateway and Prometheus on loopback; `start` returns once all three are ready.

    `model_repository/model_name` is the production export; its CPU twin goes to
    `workdir/twin_repository`. Ports left at 0 are picked free (Triton's always are).
    """

    model_repository: Path
    model_name: str
    workdir: Path
    port: int = 0
    grpc_port: int = 0
    prometheus_port: int = 0
    venv: Path = DEFAULT_VENV
    start_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        self.port = self.port or free_port()
        self.grpc_port = self.grpc_port or free_port()
        self.prometheus_port = self.prometheus_port or free_port()
        self.triton: TritonServer | None = None
        self.gateway: subprocess.Popen | None = None
        self.prometheus: subprocess.Popen | None = None

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        return spawn_logged(command, self.workdir / f"{name}.log")

    def _wait(self, name: str, process: subprocess.Popen, url: str, began: float) -> None:
        wait_ready(name, process, url, self.workdir / f"{name}.log", self.start_timeout_s, began)

    def start(self) -> None:
        reason = missing_reason(self.venv)
        if reason is not None:
            raise RuntimeError(f"No bundled Triton: {reason}")
        if shutil.which("prometheus") is None:
            raise RuntimeError("No `prometheus` on PATH (Debian: apt-get install prometheus)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            # One warm-up batch: the CPU takes seconds for the production's batch of 32. Torch
            # leaves a core to the gateway beside it (`spare_cpu_threads`).
            twin = self.workdir / "twin_repository"
            write_cpu_twin(self.model_repository, self.model_name, twin,
                           ServingOptions(warmup_batch_sizes=(1,),
                                          intra_op_threads=spare_cpu_threads()))
            models: tuple[str, ...] = (self.model_name,)
            if (self.model_repository / DETECTOR_NAME).is_dir():  # the person detector's twin
                write_detector_twin(self.model_repository, twin, spare_cpu_threads())
                models += (DETECTOR_NAME,)
            self.triton = TritonServer(twin, self.workdir, models, self.venv)
            # Triton picks free ports now; ours are bound later, so keep it off them.
            keep_ports_off(self.triton, {self.port, self.grpc_port, self.prometheus_port})
            self.triton.start(self.start_timeout_s)

            began = time.monotonic()
            self.gateway = self._spawn("gateway", gateway_command(
                self.triton.grpc_url, self.model_name, self.port, self.grpc_port))
            self._wait("gateway", self.gateway, self.gateway_url + "/health/ready", began)

            began = time.monotonic()
            config = write_prometheus_dir(self.workdir / "prometheus", f"127.0.0.1:{self.port}",
                                          f"127.0.0.1:{self.triton.metrics_port}")
            self.prometheus = self._spawn("prometheus", [
                "prometheus", f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'prometheus' / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
            ])
            self._wait("prometheus", self.prometheus, self.prometheus_url + "/-/ready", began)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop Prometheus, the gateway (it drains), then Triton."""
        _stop(self.prometheus)
        _stop(self.gateway, timeout_s=40)
        if self.triton is not None:
            self.triton.stop()
        self.prometheus = self.gateway = self.triton = None

    def alive(self) -> bool:
        return all(p is not None and p.poll() is None for p in (
            self.prometheus, self.gateway, self.triton and self.triton.process))

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def default_model_repository(model_name: str) -> Path:
    """model_repository/ when it holds the model; else build/, exporting an UNTRAINED model."""
    if any((ROOT / "model_repository" / model_name).glob("*/model.pt")):
        return ROOT / "model_repository"
    build = ROOT / "build" / "model_repository"
    print(f"No trained {model_name} in model_repository/: serving an UNTRAINED export")
    if not (build / model_name).is_dir():
        subprocess.run([sys.executable, "-m", "training.export", "--variant", model_name,
                        "--repository", str(build)], check=True, cwd=ROOT)
    return build


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Run Triton, the gateway and Prometheus locally.")
    p.add_argument("--model-name", default="margipose-lite")
    p.add_argument("--model-repository", type=Path,
                   help="production repository (default: model_repository/, else build/)")
    p.add_argument("--workdir", type=Path, default=ROOT / "build" / "stack",
                   help="logs, the CPU twin, the Triton tree and Prometheus' data")
    p.add_argument("--port", type=int, default=8080, help="gateway REST port")
    p.add_argument("--grpc-port", type=int, default=50051, help="gateway gRPC port")
    p.add_argument("--prometheus-port", type=int, default=9090)
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="nvidia-pytriton's venv")
    return p


def main(argv: list[str] | None = None) -> None:
    args = get_args_parser().parse_args(argv)
    repository = args.model_repository or default_model_repository(args.model_name)
    stack = Stack(repository.resolve(), args.model_name, args.workdir, args.port,
                  args.grpc_port, args.prometheus_port, args.venv)
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    try:
        with stack:
            triton = stack.triton
            print(f"gateway     {stack.gateway_url} (docs {stack.gateway_url}/docs), "
                  f"gRPC 127.0.0.1:{stack.grpc_port}\n"
                  f"triton      {triton.http_url}, gRPC {triton.grpc_url}, "
                  f"metrics {triton.metrics_url}\n"
                  f"prometheus  {stack.prometheus_url}\n"
                  f"logs        {stack.workdir}/{{tritonserver,gateway,prometheus}}.log\n"
                  "Ctrl-C stops all three.", flush=True)
            while stack.alive():
                time.sleep(1)
            print("a process exited; stopping the stack (see the logs)", file=sys.stderr)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
