"""The embedded PostgreSQL: what a developer gets with no DATABASE_URL at all."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend.core.config import PROJECT_ROOT
from backend.db.migrations import head_revisions

pytestmark = [pytest.mark.slow]


def run(command: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command,
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_processes_share_one_embedded_server(tmp_path: Path) -> None:
    """Two `alembic upgrade head` at once with DATABASE_URL unset: one server, one schema."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TEST_DATABASE_URL")}
    env["EMBEDDED_DB_DIR"] = str(tmp_path / "pg")
    upgrade = [sys.executable, "-m", "alembic", "upgrade", "head"]

    runners = [run(upgrade, env) for _ in range(2)]
    outputs = await asyncio.gather(*(asyncio.to_thread(r.communicate, None, 120) for r in runners))
    assert [r.returncode for r in runners] == [0, 0], [err for _, err in outputs]

    current = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "alembic", "current"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert current.returncode == 0, current.stderr
    assert f"{head_revisions()[0]} (head)" in current.stdout
    assert (tmp_path / "pg" / "PG_VERSION").exists()
