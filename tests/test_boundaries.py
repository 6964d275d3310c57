"""The architecture's seams.

- posecontract/ (the model's contract) imports none of our other packages;
- poseapi/ (the wire contract) imports only posecontract: the server and the client share it;
  its REST JSON models (poseapi/schemas.py) alone need pydantic, and the client never
  imports them;
- service/ never imports training/ or poseclient/;
- poseclient/ imports poseapi and posecontract, never the server, training or the server's
  dependencies at module level. Its one door to the service is `poseclient.local` (`--local`),
  which imports the service inside `LocalService`, when one is made.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVER_ONLY = {"service", "training", "torch", "fastapi", "pydantic", "uvicorn", "starlette"}


def _imports(package: str, *, module_level: bool = False) -> set[tuple[str, str]]:
    """(file, module) of every absolute import under `package`, modules named in full;
    `module_level`: only those run when the module is imported (not inside functions)."""
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        where = str(path.relative_to(ROOT))
        tree = ast.parse(path.read_text(), filename=str(path))
        nodes = _module_level(tree) if module_level else ast.walk(tree)
        for node in nodes:
            if isinstance(node, ast.Import):
                found |= {(where, a.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add((where, node.module))
    return found


def _module_level(tree: ast.Module):
    """The statements run on import: the module's, and those in its if/try blocks."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, (ast.If, ast.Try)):
            todo += [*node.body, *node.orelse, *getattr(node, "finalbody", []),
                     *(s for h in getattr(node, "handlers", []) for s in h.body)]


def _within(module: str, packages: set[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


@pytest.mark.parametrize("package, forbidden", [
    ("posecontract", {"training", "service", "poseapi", "poseclient"}),
    ("poseapi", {"training", "service", "poseclient", "torch", "fastapi"}),
    ("service", {"training", "poseclient"}),
])
def test_package_does_not_import(package, forbidden):
    imports = _imports(package)
    assert sorted((f, m) for f, m in imports if _within(m, forbidden)) == []
    assert imports, f"no imports found under {package}/: the scan is broken"


def test_only_the_json_models_of_the_api_need_pydantic():
    assert {f for f, m in _imports("poseapi") if _within(m, {"pydantic"})} == \
        {"poseapi/schemas.py"}
    assert not {m for _, m in _imports("poseclient") if _within(m, {"poseapi.schemas"})}


def test_the_client_imports_no_server_on_import():
    imports = _imports("poseclient", module_level=True)
    assert sorted((f, m) for f, m in imports if _within(m, SERVER_ONLY)) == []
    assert imports, "no imports found under poseclient/: the scan is broken"


def test_only_the_local_mode_reaches_the_service_and_only_when_asked():
    everywhere = _imports("poseclient")
    assert {f for f, m in everywhere if _within(m, SERVER_ONLY)} == {"poseclient/local.py"}


def test_importing_the_client_and_its_command_line_loads_no_server():
    code = ("import sys, poseclient, poseclient.cli, poseclient.draw, poseclient.local; "
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            f"{sorted(SERVER_ONLY)!r})))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == []
