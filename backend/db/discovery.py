"""Find every module's models, so Alembic and the tests see all tables without a list."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

# The package whose folders are the modules. Named, not imported here: `db` sits below the
# modules and must not depend on them.
MODULES_PACKAGE = "backend.modules"


class ModuleDiscoveryError(ImportError):
    """A folder under `backend/modules/` that looks like a module but cannot be imported."""


def module_folders(package: ModuleType | None = None) -> list[Path]:
    """Every folder under the package that holds Python code, `__init__.py` or not.

    Listing folders (not `pkgutil.iter_modules`, which only sees folders with `__init__.py`) is
    what makes a module folder someone forgot to give an `__init__.py` visible.
    """
    package = package or importlib.import_module(MODULES_PACKAGE)
    folders = []
    for root in package.__path__:
        for path in sorted(Path(root).iterdir()):
            if not path.is_dir() or path.name.startswith(("_", ".")):
                continue
            if any(path.glob("*.py")) or (path / "models").is_dir():
                folders.append(path)
    return folders


def import_models(package: ModuleType | None = None) -> list[str]:
    """Import `<package>/<name>/models.py` for every module folder; return the module names.

    Importing registers the models on `Base.metadata`. A module without `models.py` has no
    tables and is skipped. A folder without `__init__.py` is imported as a namespace package,
    so it is seen all the same. A folder Python cannot import (a name like `my-module`) and an
    error inside a `models.py` stop the caller with the folder's name: a half-seen schema makes
    autogenerate drop tables.
    """
    package = package or importlib.import_module(MODULES_PACKAGE)
    found = []
    for folder in module_folders(package):
        has_models = (folder / "models.py").is_file() or (folder / "models").is_dir()
        if not has_models:
            continue
        if not folder.name.isidentifier():
            raise ModuleDiscoveryError(
                f"module folder {folder} has models but '{folder.name}' is not a Python name, "
                f"so its tables cannot be imported: rename it (e.g. "
                f"'{folder.name.replace('-', '_').replace(' ', '_')}')"
            )
        name = f"{package.__name__}.{folder.name}.models"
        if importlib.util.find_spec(name) is None:
            raise ModuleDiscoveryError(f"{folder} has models, but {name} cannot be found")
        importlib.import_module(name)
        found.append(name)
    return found
