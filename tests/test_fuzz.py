"""A short schemathesis run in the suite; `python3 dev.py fuzz` runs a longer one."""

from __future__ import annotations

import pytest

from tests.support.fuzz import fuzz

pytestmark = [pytest.mark.slow]


async def test_the_schema_fuzzer_finds_no_server_error_and_no_schema_violation() -> None:
    result = await fuzz(examples=6, seed=1)

    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-8000:]
    assert "passed" in report
    assert "Stateful" in report  # the phase that follows links ran
