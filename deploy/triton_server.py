"""Run the real `tritonserver` bundled in nvidia-pytriton, on loopback, for tests and local ops.

Test and ops tooling, not part of the service: `make triton-env` installs nvidia-pytriton (with
its own numpy < 2) and the CPU torch into `.venv-triton`; this module, run by the main
environment's Python, starts the bundled binary as a subprocess on a model repository (the CPU
twin from `posecontract.triton.write_cpu_twin`; the binary has no libtorch backend). It works
around the traps of running the binary outside pytriton (shared/reference/triton.md):

1. the Python backend's stub is copied from `python_backend_stubs/<py>/` into `backends/python/`
   of a private copy of the server tree;
2. that copy no longer finds its bundled libraries: `nvidia_pytriton.libs` goes on
   LD_LIBRARY_PATH, and so does the interpreter's lib dir (pyenv's libpython3.11.so);
3. the venv's `bin` goes first on PATH: the stub takes its interpreter (and so numpy and torch)
   from `python3` on PATH.

    python -m deploy.triton_server --model-repository build/twin_repository --model margipose-lite
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VENV = ROOT / ".venv-triton"


def free_port() -> int:
    """A TCP port free on loopback now (another process may still take it before we do)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3.*/site-packages/pytriton"))
    if not found:
        raise FileNotFoundError(f"No nvidia-pytriton in {venv}; run `make triton-env`")
    return found[0].parent


def missing_reason(venv: Path = DEFAULT_VENV) -> str | None:
    """Why the bundled Triton cannot run from `venv`, or None when it can."""
    if not (venv / "bin" / "python3").exists():
        return f"{venv} is absent; `make triton-env` creates it"
    try:
        site = _site_packages(venv)
    except FileNotFoundError as exc:
        return str(exc)
    if not (site / "pytriton" / "tritonserver" / "bin" / "tritonserver").is_file():
        return f"{site / 'pytriton'} has no bundled tritonserver"
    return None


def prepare_server_tree(venv: Path, dest: Path) -> Path:
    """Copy the bundled server to `dest` with the stub for the venv's Python; return `dest`."""
    site = _site_packages(venv)
    version = site.parent.name.removeprefix("python")  # lib/python3.11/site-packages: "3.11"
    stub = site / "pytriton" / "tritonserver" / "python_backend_stubs" / version \
        / "triton_python_backend_stub"
    if not stub.is_file():
        raise FileNotFoundError(f"nvidia-pytriton ships no Python backend stub for {version}")
    if not (dest / "backends" / "python" / "triton_python_backend_stub").is_file():
        shutil.copytree(site / "pytriton" / "tritonserver", dest, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("python_backend_stubs", "__pycache__"))
        shutil.copy2(stub, dest / "backends" / "python" / "triton_python_backend_stub")
    return dest


def server_env(venv: Path) -> dict[str, str]:
    """The environment the bundled server and its Python stubs need (traps 2 and 3)."""
    site = _site_packages(venv)
    libdir = subprocess.run(
        [str(venv / "bin" / "python3"), "-c",
         "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    env = dict(os.environ)
    libs = [str(site / "nvidia_pytriton.libs"), libdir, env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = ":".join(p for p in libs if p)
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)  # the stub ignores it; do not pretend otherwise
    return env


class TritonServer:
    """One `tritonserver` process on loopback, restartable on the same ports.

    `start` returns once every model in `models` is ready (or the server is, when none are
    named) and raises with the server log's tail if it exits or times out first. `stop` sends
    SIGTERM (Triton finishes in-flight requests, up to `--exit-timeout-secs`), then SIGKILL.
    """

    def __init__(self, model_repository: Path, workdir: Path, models: tuple[str, ...] = (),
                 venv: Path = DEFAULT_VENV, log_verbose: int = 0, address: str = "127.0.0.1"):
        self.model_repository = Path(model_repository)
        # A loopback address (127.0.0.0/8): two servers on two addresses can share the ports,
        # like two pods behind one headless Service.
        self.address = address
        self.workdir = Path(workdir)
        self.models = models
        self.venv = venv
        self.log_verbose = log_verbose
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.log_path = self.workdir / "tritonserver.log"
        self.process: subprocess.Popen | None = None
        self.start_seconds: float | None = None  # how long the last `start` took

    @property
    def grpc_url(self) -> str:
        return f"{self.address}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.address}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.address}:{self.metrics_port}/metrics"

    def start(self, timeout_s: float = 120.0) -> None:
        if self.process is not None:
            raise RuntimeError("tritonserver is already running")
        began = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        tree = prepare_server_tree(self.venv, self.workdir / "tritonserver")
        command = [
            str(tree / "bin" / "tritonserver"),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={tree / 'backends'}",
            f"--cache-directory={tree / 'caches'}",
            f"--http-address={self.address}", f"--http-port={self.http_port}",
            f"--grpc-address={self.address}", f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.address}", f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            "--disable-auto-complete-config",  # serve the generated config exactly as written
            "--exit-timeout-secs=5",
            f"--log-verbose={self.log_verbose}",
        ]
        with self.log_path.open("ab") as log:
            log.write(f"\n==== {' '.join(command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(command, env=server_env(self.venv), stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        paths = [f"/v2/models/{m}/ready" for m in self.models] or ["/v2/health/ready"]
        while not all(self._ok(p) for p in paths):
            if self.process.poll() is not None or time.monotonic() - began > timeout_s:
                self.stop()
                raise RuntimeError(f"tritonserver did not become ready in {timeout_s:.0f} s; "
                                   f"log ({self.log_path}) ends with:\n{self.log_tail()}")
            time.sleep(0.1)
        self.start_seconds = time.monotonic() - began

    def _ok(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(self.http_url + path, timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout_s: float = 20.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the server and its Python stubs
            process.wait()

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Run the bundled tritonserver on loopback.")
    p.add_argument("--model-repository", type=Path, required=True)
    p.add_argument("--model", action="append", default=[], help="wait for this model (repeat)")
    p.add_argument("--workdir", type=Path, default=ROOT / "build" / "tritonserver")
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    args = p.parse_args(argv)
    reason = missing_reason(args.venv)
    if reason:
        raise SystemExit(reason)
    server = TritonServer(args.model_repository.resolve(), args.workdir, tuple(args.model),
                          args.venv)
    # The server runs in a session of its own: stop it on SIGTERM as on Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    with server:
        print(f"ready in {server.start_seconds:.1f} s: gRPC {server.grpc_url}, HTTP "
              f"{server.http_url}, metrics {server.metrics_url}; log {server.log_path}")
        try:
            while server.process is not None and server.process.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
