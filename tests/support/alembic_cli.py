"""Run `alembic` as a separate process, the way an init container or a developer does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from backend.core.config import PROJECT_ROOT
from tests.support.db import write_ini


def alembic(
    *args: str,
    env: dict[str, str],
    cwd: Path = PROJECT_ROOT,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_alembic(
    *args: str, env: dict[str, str], cwd: Path = PROJECT_ROOT
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "alembic", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def write_revisions(
    tmp: Path, revisions: dict[str, tuple[str | tuple[str, ...], str]], downgrade: str = "pass"
) -> Path:
    """An alembic.ini for the project's chain plus test-only revisions (in `tmp/versions`).

    `revisions` maps an id to (parents, upgrade body); a tuple of parents is a merge revision.
    """
    directory = tmp / "versions"
    directory.mkdir(parents=True, exist_ok=True)
    for revision, (down_revision, upgrade) in revisions.items():
        (directory / f"{revision}_test_only.py").write_text(
            "from alembic import op\nimport sqlalchemy as sa\n\n"
            f"revision = {revision!r}\ndown_revision = {down_revision!r}\n"
            "branch_labels = None\ndepends_on = None\n\n\n"
            f"def upgrade() -> None:\n    {upgrade}\n\n\n"
            f"def downgrade() -> None:\n    {downgrade}\n"
        )
    return write_ini(tmp, directory)


def chain_plus(
    tmp: Path, *, revision: str, down_revision: str, upgrade: str, downgrade: str = "pass"
) -> Path:
    """An alembic.ini for the project's chain plus one test-only revision."""
    return write_revisions(tmp, {revision: (down_revision, upgrade)}, downgrade)
