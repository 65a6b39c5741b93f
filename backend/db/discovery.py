"""Find every module's models, so Alembic and the tests see all tables without a list."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from types import ModuleType

import backend.modules


def import_models(package: ModuleType = backend.modules) -> list[str]:
    """Import `<package>/<name>/models.py` for every module folder; return the module names.

    Importing registers the models on `Base.metadata`. A module without `models.py` is skipped;
    an error inside one is raised, never swallowed (a half-seen schema makes autogenerate drop
    tables).
    """
    found = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if not info.ispkg or info.name.startswith("_"):
            continue
        name = f"{package.__name__}.{info.name}.models"
        if importlib.util.find_spec(name) is None:
            continue
        importlib.import_module(name)
        found.append(name)
    return found
