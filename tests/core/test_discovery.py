from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

from backend.db.base import Base
from backend.db.discovery import ModuleDiscoveryError, import_models


def package_of(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    folders: dict[str, str | None],
    *,
    with_init: bool = True,
) -> ModuleType:
    """A `modules` package in tmp_path: folder -> models.py source (None: no models.py)."""
    package = tmp_path / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    for folder, models in folders.items():
        (package / folder).mkdir()
        if with_init:
            (package / folder / "__init__.py").write_text("")
        if models is not None:
            (package / folder / "models.py").write_text(models)
    monkeypatch.syspath_prepend(str(tmp_path))
    return importlib.import_module(name)


def test_every_module_with_models_is_imported() -> None:
    found = import_models()
    assert "backend.modules.user.models" in found
    assert "users" in Base.metadata.tables


def test_a_new_module_folder_is_found_without_being_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folders = {"alpha": "LOADED = True\n", "beta": None, "_private": "LOADED = True\n"}
    package = package_of(tmp_path, monkeypatch, "someapp_modules", folders)

    assert import_models(package) == ["someapp_modules.alpha.models"]
    assert sys.modules["someapp_modules.alpha.models"].LOADED is True


def test_a_broken_models_file_is_an_error_not_a_silent_skip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = package_of(
        tmp_path, monkeypatch, "broken_modules", {"gamma": "import does_not_exist\n"}
    )

    with pytest.raises(ModuleNotFoundError, match="does_not_exist"):
        import_models(package)


def test_a_module_folder_without_init_is_still_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder a team forgot to give an `__init__.py`: its tables must not vanish."""
    package = package_of(
        tmp_path, monkeypatch, "noinit_modules", {"delta": "LOADED = 'delta'\n"}, with_init=False
    )

    assert import_models(package) == ["noinit_modules.delta.models"]
    assert sys.modules["noinit_modules.delta.models"].LOADED == "delta"


def test_a_module_folder_python_cannot_import_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = package_of(tmp_path, monkeypatch, "badname_modules", {"order-items": "X = 1\n"})

    with pytest.raises(ModuleDiscoveryError, match=r"order-items.*rename it.*order_items"):
        import_models(package)
