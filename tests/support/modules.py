"""For tests outside tests/modules that go through a module's endpoints (the core's body limits
through an upload, a deployment rehearsal): skipped, saying why, once the module is removed."""

from __future__ import annotations

import pytest

from backend.main import MODULES


def needs(*names: str) -> pytest.MarkDecorator:
    missing = [name for name in names if name not in MODULES]
    return pytest.mark.skipif(
        bool(missing), reason=f"goes through the {', '.join(missing)} module, which is removed"
    )
