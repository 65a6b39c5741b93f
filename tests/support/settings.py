"""Settings for a test's app, given by name whichever class (core or module) declares them."""

from __future__ import annotations

from typing import Any

from backend.core.config import AppSettings, settings_classes
from backend.main import module_routers

module_routers()  # imports every mounted module, with its settings class


def configured(**values: Any) -> list[AppSettings]:
    """One instance per settings class that declares any of `values` (the rest read the
    environment as usual): `create_app(*configured(max_upload_bytes=10, database_url=...))`."""
    unknown = set(values) - {name for kind in settings_classes() for name in kind.model_fields}
    assert not unknown, f"no settings class declares {sorted(unknown)}"
    made = []
    for kind in settings_classes():
        mine = {name: value for name, value in values.items() if name in kind.model_fields}
        if mine:  # ENVIRONMENT is in every class: given, it makes one of each
            made.append(kind(**mine))
    return made
