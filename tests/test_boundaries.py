"""The architecture's seams: service/ never imports training/, posecontract/ imports neither."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(package: str) -> set[tuple[str, str]]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found |= {(str(path.relative_to(ROOT)), a.name.split(".")[0]) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add((str(path.relative_to(ROOT)), node.module.split(".")[0]))
    return found


@pytest.mark.parametrize("package, forbidden", [
    ("service", {"training"}),
    ("posecontract", {"training", "service"}),
])
def test_package_does_not_import(package, forbidden):
    offenders = sorted((f, m) for f, m in _imports(package) if m in forbidden)
    assert offenders == []
    assert _imports(package), f"no imports found under {package}/: the scan is broken"
