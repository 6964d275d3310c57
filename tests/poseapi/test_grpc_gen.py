"""The committed gRPC stubs are exactly what `make proto` generates from proto/ today."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "poseapi" / "grpc_gen"


def _protoc_args() -> list[str]:
    """PROTOC_ARGS from the Makefile: the one place the command is written."""
    makefile = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    match = re.search(r"^PROTOC_ARGS\s*:?=(.*)$", makefile, re.MULTILINE)
    assert match, "Makefile has no PROTOC_ARGS"
    return shlex.split(match.group(1))


def _files(folder: Path) -> dict[str, bytes]:
    """Generated files under `folder` (the hand-written __init__.py files aside)."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*_pb2*.py*"))}


def test_committed_stubs_match_a_fresh_generation(tmp_path):
    pytest.importorskip("grpc_tools", reason="grpcio-tools (the dev extra) generates the stubs")
    args = [re.sub(r"^(--\w+_out)=\.$", rf"\1={tmp_path}", a) for a in _protoc_args()]
    assert any(a.startswith("--grpc_python_out=") for a in args)
    done = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", *args], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    fresh = _files(tmp_path / "poseapi" / "grpc_gen")
    committed = _files(GENERATED)
    assert set(fresh) == {"pose/v1/pose_pb2.py", "pose/v1/pose_pb2.pyi", "pose/v1/pose_pb2_grpc.py"}
    assert set(committed) == set(fresh)
    stale = [name for name in fresh if committed[name] != fresh[name]]
    assert not stale, f"{stale} differ from proto/: run `make proto` and commit the result"


def test_stubs_import_as_a_package():
    from poseapi.grpc_gen.pose.v1 import pose_pb2, pose_pb2_grpc

    assert pose_pb2.DESCRIPTOR.package == "pose.v1"
    assert pose_pb2_grpc.PoseServiceStub
