from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from backend.db.base import Base
from backend.db.discovery import import_models


def test_every_module_with_models_is_imported() -> None:
    found = import_models()
    assert "backend.modules.user.models" in found
    assert "users" in Base.metadata.tables


def test_a_new_module_folder_is_found_without_being_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "someapp_modules"
    for name, models in {"alpha": True, "beta": False, "_private": True}.items():
        (package / name).mkdir(parents=True)
        (package / name / "__init__.py").write_text("")
        if models:
            (package / name / "models.py").write_text("LOADED = True\n")
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))

    found = import_models(importlib.import_module("someapp_modules"))

    assert found == ["someapp_modules.alpha.models"]
    assert sys.modules["someapp_modules.alpha.models"].LOADED is True


def test_a_broken_models_file_is_an_error_not_a_silent_skip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "broken_modules"
    (package / "gamma").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "gamma" / "__init__.py").write_text("")
    (package / "gamma" / "models.py").write_text("import does_not_exist\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    with pytest.raises(ModuleNotFoundError, match="does_not_exist"):
        import_models(importlib.import_module("broken_modules"))
