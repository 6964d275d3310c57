"""The client installed alone: a fresh venv with the project's base and `client` dependencies
only (no fastapi, pydantic, uvicorn, torch), and margipose-serve itself without its other
extras. The `margipose` command line works there against the real gateway over REST and gRPC,
draws a picture, and refuses `--local` with the extras to install."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from posecontract.skeleton import JOINT_NAMES
from tests.service.conftest import jpeg_bytes

ROOT = Path(__file__).resolve().parents[2]
SERVER_ONLY = ("fastapi", "pydantic", "uvicorn", "torch", "starlette", "prometheus_client")
PIP_TIMEOUT_S = 900


def client_requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["client"]]


def _pip(venv: Path, *args: str) -> None:
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "--quiet",
                           "--disable-pip-version-check", *args], capture_output=True,
                          text=True, timeout=PIP_TIMEOUT_S)
    assert done.returncode == 0, f"pip {' '.join(args)} failed:\n{done.stderr[-3000:]}"


def _source_copy(where: Path) -> Path:
    """What building the distribution reads, copied: pip builds in the source folder."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = project["tool"]["setuptools"]["packages"]["find"]["include"]
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, where / name)
    for package in {p.rstrip("*") for p in packages}:
        shutil.copytree(ROOT / package, where / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return where


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("client") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    _pip(venv, "install", *client_requirements())
    # The project itself, without dependencies: what the client extra adds is all there is.
    _pip(venv, "install", "--no-deps", str(_source_copy(tmp_path_factory.mktemp("source"))))
    return venv


def _run(venv: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env={**env, "PATH": f"{venv / 'bin'}:{env['PATH']}"})


@pytest.mark.slow
def test_the_client_alone_predicts_draws_and_describes(client_venv, server, tmp_path):
    python = client_venv / "bin" / "python"
    # Run from elsewhere, so that nothing is imported from the checkout.
    lean = _run(client_venv, python, "-c", "import importlib.util as u, sys; print(' '.join("
                f"m for m in {SERVER_ONLY!r} if u.find_spec(m)))", cwd=tmp_path)
    assert lean.returncode == 0 and lean.stdout.split() == [], lean.stdout + lean.stderr
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg_bytes(seed=3))
    margipose = client_venv / "bin" / "margipose"

    rest = _run(client_venv, margipose, "predict", photo, "--url", server.url,
                "--box", "100,50,80,120", "--out", tmp_path / "r.json", cwd=tmp_path)
    assert rest.returncode == 0, rest.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    assert [j["name"] for j in result["persons"][0]["joints"]] == list(JOINT_NAMES)

    grpc = _run(client_venv, margipose, "predict", photo, "--grpc", server.grpc_target,
                "--out", tmp_path / "g.json", "--render", tmp_path / "g.png", cwd=tmp_path)
    assert grpc.returncode == 0, grpc.stderr
    assert json.loads((tmp_path / "g.json").read_text())["model"] == result["model"]
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    model = _run(client_venv, margipose, "model", "--grpc", server.grpc_target, cwd=tmp_path)
    assert model.returncode == 0, model.stderr
    assert json.loads(model.stdout)["joints"] == list(JOINT_NAMES)

    local = _run(client_venv, margipose, "predict", photo, "--local", tmp_path, cwd=tmp_path)
    assert local.returncode != 0
    assert "margipose-serve[serve,local]" in local.stderr and "Traceback" not in local.stderr
