"""The layers: core at the bottom, db on core, modules on both, the app on top."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from backend.core.config import PROJECT_ROOT

BACKEND = PROJECT_ROOT / "backend"
# What each package may import from `backend` (besides itself).
ALLOWED = {
    "core": set(),
    "db": {"core"},
}


def backend_imports(path: Path) -> set[str]:
    """The `backend.<package>` names a file imports, at any depth in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "backend" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_lower_layer_never_imports_a_higher_one(package: str) -> None:
    for path in sorted((BACKEND / package).rglob("*.py")):
        outside = backend_imports(path) - ALLOWED[package] - {package}
        assert not outside, f"{path.relative_to(PROJECT_ROOT)} imports backend.{outside}"
