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


def test_main_only_mounts_module_routers() -> None:
    """A module's wiring lives in its folder: `main.py` takes nothing from it but the router."""
    taken = set()
    for node in ast.walk(ast.parse((BACKEND / "main.py").read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("backend.modules"):
            taken |= {f"{node.module}.{alias.name}" for alias in node.names}
    assert taken, "main.py mounts no module"
    for name in taken:
        assert name.endswith(".router"), f"main.py imports {name}"


def test_handlers_reach_app_state_only_through_typed_dependencies() -> None:
    """`app.state` is read in one place (core/state.py) and set in one (core/app.py)."""
    allowed = {BACKEND / "core" / "state.py", BACKEND / "core" / "app.py"}
    for path in sorted(BACKEND.rglob("*.py")):
        if path not in allowed:
            assert ".state." not in path.read_text(), f"{path.relative_to(PROJECT_ROOT)}"
