"""squawk lints the SQL every revision runs, with the rules in `.squawk.toml`.

A revision that must break a rule on purpose says so in its module, with the reason:
`squawk_ignore = {"ban-drop-column": "the column was unused since release 1.4"}`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.script import Script, ScriptDirectory
from sqlalchemy.engine import URL

from backend.core.config import PROJECT_ROOT
from backend.db.migrations import SCRIPT_LOCATION, head_revisions
from tests.support import db
from tests.support.alembic_cli import alembic, write_revisions

SQUAWK = Path(sys.executable).with_name("squawk")
CONFIG = PROJECT_ROOT / ".squawk.toml"
REVISIONS = list(reversed(list(ScriptDirectory(str(SCRIPT_LOCATION)).walk_revisions())))
# Offline mode: the SQL is rendered without a database (nothing listens on port 1).
OFFLINE = db.alembic_env(URL.create("postgresql", host="127.0.0.1", port=1, database="x"))


def upgrade_sql(revision: str, parents: tuple[str, ...], *ini: str) -> str:
    """The SQL this revision runs, after the session settings every run starts with."""
    span = f"{parents[0]}:{revision}" if parents else revision
    result = alembic(*ini, "upgrade", span, "--sql", env=OFFLINE)
    assert result.returncode == 0, result.stderr
    sql = result.stdout
    # From a merge's first parent, Alembic also renders the other branch's revisions: keep only
    # this revision's own transaction (it comes last), from the BEGIN before its marker.
    marker = re.search(rf"^-- Running upgrade .*-> {re.escape(revision)}$", sql, re.MULTILINE)
    assert marker is not None, sql
    preamble = sql[: sql.index("BEGIN;")]
    return preamble + sql[sql.rindex("BEGIN;", 0, marker.start()) :]


def squawk(sql: str, name: str, ignore: dict[str, str]) -> subprocess.CompletedProcess[str]:
    excluded = [f"--exclude={rule}" for rule in ignore]
    return subprocess.run(
        [
            str(SQUAWK),
            "--config",
            str(CONFIG),
            "--reporter",
            "gcc",
            "--stdin-filepath",
            name,
            *excluded,
        ],
        input=sql,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("revision", REVISIONS, ids=lambda r: r.revision)
def test_revision_sql_passes_squawk(revision: Script) -> None:
    ignore: dict[str, str] = getattr(revision.module, "squawk_ignore", {})
    for rule, reason in ignore.items():
        assert reason.strip(), f"{revision.revision}: squawk_ignore[{rule!r}] needs a reason"
    sql = upgrade_sql(revision.revision, tuple(revision._versioned_down_revisions))

    result = squawk(sql, f"{revision.revision}.sql", ignore)

    assert result.returncode == 0, (
        f"squawk flags revision {revision.revision} ({revision.doc}):\n{result.stdout}"
        "Fix the revision, or add squawk_ignore = {rule: reason} to it if it is deliberate."
    )


def test_squawk_flags_a_dangerous_revision(tmp_path: Path) -> None:
    """The lint above can fail: a required column and a blocking index on an existing table."""
    head = head_revisions()[0]  # with two heads, test_exactly_one_head says what to do
    ini = write_revisions(
        tmp_path,
        {
            "lint0000test": (
                head,
                'op.add_column("users", sa.Column("template_test_n", sa.Text, nullable=False)); '
                'op.create_index("ix_template_test_n", "users", ["template_test_n"])',
            )
        },
    )
    sql = upgrade_sql("lint0000test", (head,), "-c", str(ini))

    result = squawk(sql, "lint0000test.sql", {})

    assert result.returncode != 0
    assert "adding-required-field" in result.stdout
    assert "require-concurrent-index-creation" in result.stdout
    assert (
        "require-concurrent-index-creation"
        not in squawk(sql, "x.sql", {"require-concurrent-index-creation": "test"}).stdout
    )
