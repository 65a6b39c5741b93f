"""The layers: core at the bottom, db on core, modules on both, the app on top; and the modules
in one order, read from main.py: a module imports only the modules before it, and what is not a
module imports none (users, the ground floor, excepted in tests), so any module can go, highest
first. Read from the source (every `import`, at any depth), not from what happens to be loaded.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.core.config import PROJECT_ROOT
from backend.main import MODULES

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


def test_handlers_reach_app_state_only_through_typed_dependencies() -> None:
    """`app.state` is read in one place (core/state.py) and set in one (core/app.py)."""
    allowed = {BACKEND / "core" / "state.py", BACKEND / "core" / "app.py"}
    for path in sorted(BACKEND.rglob("*.py")):
        if path not in allowed:
            assert ".state." not in path.read_text(), f"{path.relative_to(PROJECT_ROOT)}"


# A module's code, tests and benchmarks: importing any of them is depending on the module.
PREFIXES = ("backend.modules.", "tests.modules.", "bench.modules.")


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module name) for each module (its code, tests or benchmarks) the file imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        # `from bench.modules import Context` names the package's own helper, not a module.
        found = {
            parts[2]
            for parts in (name.split(".") for name in names if name.startswith(PREFIXES))
            if len(parts) > 2 and parts[2] in MODULES
        }
        for module in sorted(found):
            yield node.lineno, module


def files(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (PROJECT_ROOT / folder).rglob("*.py"))


def where(path: Path, line: int) -> str:
    return f"{path.relative_to(PROJECT_ROOT)}:{line}"


# Where a module's own code lives: its folder, its tests, its benchmarks.
MODULE_ROOTS = ("backend/modules", "tests/modules", "bench/modules")


@pytest.mark.parametrize("module", MODULES)
def test_a_module_imports_only_the_modules_before_it(module: str) -> None:
    allowed = set(MODULES[: MODULES.index(module) + 1])
    wrong = [
        f"{where(path, line)} imports {name}"
        for root in MODULE_ROOTS
        for path in files(f"{root}/{module}")
        for line, name in imported_modules(path)
        if name not in allowed
    ]
    assert not wrong, f"{module} may import only {sorted(allowed)}: " + "; ".join(wrong)


def test_what_is_not_a_module_imports_none() -> None:
    """The core, the database, the app's entry points (worker, dev server), the migrations, the
    benchmarks' harness: none. The tests outside tests/modules: only users, the ground floor
    (every API call needs an account). A module reaches the rest through hooks it registers."""
    ground = MODULES[0]
    wrong = [
        f"{where(path, line)} imports {name}"
        for path in [*files("backend", "tests", "bench"), PROJECT_ROOT / "dev.py"]
        if not any(path.is_relative_to(PROJECT_ROOT / root) for root in MODULE_ROOTS)
        for line, name in imported_modules(path)
        if not (name == ground and path.is_relative_to(PROJECT_ROOT / "tests"))
    ]
    assert not wrong, "; ".join(wrong)


def test_every_module_folder_is_mounted_once() -> None:
    folders = {
        path.name
        for path in (BACKEND / "modules").iterdir()
        if path.is_dir() and any(path.glob("*.py"))
    }
    assert folders == set(MODULES), "a folder under backend/modules/ is not in main.MODULES"
    assert len(set(MODULES)) == len(MODULES)


def test_revisions_import_no_module_code() -> None:
    """A module deleted with its folder leaves its old revisions behind (its tables' history):
    they must still run, so an upgrade from an empty database never breaks."""
    wrong = [
        f"{where(path, line)} imports {name}"
        for path in files("backend/alembic")
        for line, name in imported_modules(path)
    ]
    assert not wrong, "; ".join(wrong)
