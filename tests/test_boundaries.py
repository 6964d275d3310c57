"""The architecture's seams: service/ never imports training/, posecontract/ imports neither,
and poseclient/ stays a light client (the gRPC stubs and the contract, no service core, no torch).
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The command line's --local mode runs the service core in-process, and --grpc --render draws with
# the service's renderer; the CLI imports these two only when asked to, so they are the modules of
# poseclient/ that may import the service (local.py: torch too).
IN_PROCESS = {"poseclient/local.py", "poseclient/draw.py"}


def _imports(package: str) -> set[tuple[str, str]]:
    """(file, module) of every absolute import under `package`, modules named in full."""
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        where = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found |= {(where, a.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add((where, node.module))
    return found


def _within(module: str, packages: set[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


@pytest.mark.parametrize("package, forbidden, allowed", [
    ("service", {"training"}, set()),
    ("posecontract", {"training", "service"}, set()),
    ("poseclient", {"training", "service", "torch", "fastapi", "pydantic", "uvicorn"},
     {"service.grpc_gen"}),
])
def test_package_does_not_import(package, forbidden, allowed):
    imports = _imports(package)
    offenders = sorted((f, m) for f, m in imports if _within(m, forbidden)
                       and not _within(m, allowed) and f not in IN_PROCESS)
    assert offenders == []
    assert imports, f"no imports found under {package}/: the scan is broken"


def test_the_in_process_exceptions_are_still_needed():
    imports = _imports("poseclient")
    assert {f for f, m in imports if _within(m, {"service"}) and not _within(
        m, {"service.grpc_gen"})} == IN_PROCESS


def test_importing_the_client_and_its_command_line_loads_no_service_core():
    code = ("import sys, poseclient, poseclient.cli; "
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('service', 'training', 'torch', 'fastapi', 'pydantic', 'uvicorn'))))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    loaded = run.stdout.split()
    assert loaded and all(m == "service" or _within(m, {"service.grpc_gen"}) for m in loaded), \
        loaded
