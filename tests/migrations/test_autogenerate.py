"""A team adds a module the way the README says; Alembic must see it and write a working script."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from backend.core.config import PROJECT_ROOT
from tests.support import db
from tests.support.alembic_cli import alembic

pytestmark = [pytest.mark.slow]

VECTOR_MODULE = """
import uuid

from pgvector.sqlalchemy import Vector
from sqlalchemy import ForeignKey, Index, Text
from sqlalchemy.orm import Mapped, mapped_column

from backend.db.base import Base, Timestamps, UUIDPrimaryKey


class Passage(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "template_test_passages"

    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(Text)
    embedding: Mapped[list[float]] = mapped_column(Vector(8))

    __table_args__ = (
        Index(
            "ix_template_test_passages_embedding_hnsw",
            "embedding",
            postgresql_using="hnsw",
            postgresql_with={"m": 16, "ef_construction": 64},
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
    )
"""


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """A clone of the project's code, so a new module and its migration stay out of the repo."""
    copy = tmp_path / "project"
    copy.mkdir()
    shutil.copytree(
        PROJECT_ROOT / "backend", copy / "backend", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(PROJECT_ROOT / "alembic.ini", copy / "alembic.ini")
    shutil.copy(PROJECT_ROOT / "pyproject.toml", copy / "pyproject.toml")
    return copy


def env_for(copy: Path, url: URL) -> dict[str, str]:
    # The copy's `backend` shadows the installed one.
    return db.alembic_env(url, PYTHONPATH=str(copy))


async def test_new_vector_module_autogenerates_a_script_that_runs_unedited(
    migrated_db: URL, project_copy: Path
) -> None:
    module = project_copy / "backend" / "modules" / "template_test_passage"
    module.mkdir()
    (module / "__init__.py").write_text("")
    (module / "models.py").write_text(VECTOR_MODULE)
    env = env_for(project_copy, migrated_db)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return alembic(*args, env=env, cwd=project_copy)

    # The new module is seen with no edit outside its folder: the database now lags the models.
    check = await asyncio.to_thread(run, "check")
    assert check.returncode != 0
    assert "template_test_passages" in check.stderr + check.stdout

    made = await asyncio.to_thread(
        run, "revision", "--autogenerate", "-m", "add template test passages"
    )
    assert made.returncode == 0, made.stderr
    scripts = list(
        (project_copy / "backend" / "alembic" / "versions").glob("*add_template_test_passages.py")
    )
    assert len(scripts) == 1
    script = scripts[0]
    assert script.name[:4].isdigit()
    assert "-" in script.name
    source = script.read_text()
    assert "import pgvector" in source
    assert "hnsw" in source
    assert "vector_cosine_ops" in source
    # The post-write hook formatted it.
    formatted = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "ruff", "format", "--check", str(script)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert formatted.returncode == 0, formatted.stdout

    up = await asyncio.to_thread(run, "upgrade", "head")
    assert up.returncode == 0, up.stderr
    index = await db.fetch_all(
        migrated_db,
        "SELECT indexdef FROM pg_indexes "
        "WHERE indexname = 'ix_template_test_passages_embedding_hnsw'",
    )
    assert len(index) == 1
    assert "hnsw" in str(index[0][0])
    assert "vector_cosine_ops" in str(index[0][0])

    # Models and database agree now, and a second autogenerate writes nothing.
    recheck = await asyncio.to_thread(run, "check")
    assert recheck.returncode == 0, recheck.stderr + recheck.stdout
    again = await asyncio.to_thread(run, "revision", "--autogenerate", "-m", "nothing")
    assert again.returncode == 0, again.stderr
    assert "no revision file written" in again.stdout + again.stderr
    assert not list((project_copy / "backend" / "alembic" / "versions").glob("*nothing.py"))

    down = await asyncio.to_thread(run, "downgrade", "-1")
    assert down.returncode == 0, down.stderr
    assert "template_test_passages" not in await db.table_names(migrated_db)


REVIEWED_BEFORE = """
from sqlalchemy import Boolean, Integer, Text
from sqlalchemy.orm import Mapped, mapped_column

from backend.db.base import Base, UUIDPrimaryKey


class Reviewed(UUIDPrimaryKey, Base):
    __tablename__ = "template_test_reviewed"

    title: Mapped[str] = mapped_column(Text)
    legacy: Mapped[bool | None] = mapped_column(Boolean)
    old_name: Mapped[str | None] = mapped_column(Text)
    score: Mapped[int | None] = mapped_column(Integer)


class Doomed(UUIDPrimaryKey, Base):
    __tablename__ = "template_test_doomed"
"""

# Every change a reviewer must not miss, at once: the seed scenario (a NOT NULL column whose
# default is Python's only), a dropped column and table, a rename autogenerate sees as drop+add,
# a type change, and an index on a table that already exists.
REVIEWED_AFTER = """
from sqlalchemy import BigInteger, Text
from sqlalchemy.orm import Mapped, mapped_column

from backend.db.base import Base, UUIDPrimaryKey


class Reviewed(UUIDPrimaryKey, Base):
    __tablename__ = "template_test_reviewed"

    title: Mapped[str] = mapped_column(Text, index=True)
    new_name: Mapped[str | None] = mapped_column(Text)
    score: Mapped[int | None] = mapped_column(BigInteger)
    age: Mapped[int] = mapped_column(default=18)
"""


async def test_autogenerate_flags_what_a_reviewer_must_not_miss(
    migrated_db: URL, project_copy: Path
) -> None:
    # A module folder without __init__.py: seen all the same.
    module = project_copy / "backend" / "modules" / "template_test_review"
    module.mkdir()
    (module / "models.py").write_text(REVIEWED_BEFORE)
    env = env_for(project_copy, migrated_db)
    versions = project_copy / "backend" / "alembic" / "versions"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return alembic(*args, env=env, cwd=project_copy)

    first = await asyncio.to_thread(run, "revision", "--autogenerate", "-m", "reviewed tables")
    assert first.returncode == 0, first.stderr
    assert "REVIEW" not in first.stdout  # new tables and their indexes are safe
    assert (await asyncio.to_thread(run, "upgrade", "head")).returncode == 0
    before = await db.current_revisions(migrated_db)
    await db.execute(
        migrated_db,
        "INSERT INTO template_test_reviewed (id, title) VALUES (gen_random_uuid(), 'a row')",
    )

    (module / "models.py").write_text(REVIEWED_AFTER)
    made = await asyncio.to_thread(run, "revision", "--autogenerate", "-m", "risky changes")
    assert made.returncode == 0, made.stderr

    console = made.stdout
    (script,) = versions.glob("*risky_changes.py")
    source = script.read_text()
    upgrade = source[source.index("def upgrade") : source.index("def downgrade")]
    expected = {
        "NOT NULL without a server default": "template_test_reviewed.age",
        "data loss": "template_test_reviewed.legacy",
        "looks like a rename": 'new_column_name="new_name"',
        "type change": "template_test_reviewed.score",
        "index without CONCURRENTLY": "ix_template_test_reviewed_title",
    }
    for kind, detail in expected.items():
        # In the script, as a comment above the operation, and on the console.
        assert f"# REVIEW ({kind})" in upgrade, kind
        assert f"- {kind}:" in console, kind
        assert detail in " ".join(line.strip("# ") for line in upgrade.splitlines()), detail
    assert "drops the table template_test_doomed" in console
    assert 'server_default=sa.text("18")' in console
    note_at = upgrade.index("# REVIEW (NOT NULL without a server default)")
    assert upgrade.index("op.add_column", note_at) < upgrade.index("# REVIEW", note_at + 1)
    # The notes keep the script lint-clean (the test command runs ruff over versions/).
    lint = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "ruff", "check", str(script)],
        capture_output=True,
        text=True,
        check=False,
        cwd=project_copy,
    )
    assert lint.returncode == 0, lint.stdout

    # Run as written, on a table with a row, it fails as the note said: one message, no traceback.
    up = await asyncio.to_thread(run, "upgrade", "head")
    assert up.returncode != 0
    assert "Traceback" not in up.stderr + up.stdout
    assert 'column "age" of relation "template_test_reviewed" contains null values' in up.stdout
    assert "server_default=" in up.stdout
    assert await db.current_revisions(migrated_db) == before


async def test_a_hand_written_revision_is_usable_as_written(
    migrated_db: URL, project_copy: Path
) -> None:
    env = env_for(project_copy, migrated_db)
    versions = project_copy / "backend" / "alembic" / "versions"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return alembic(*args, env=env, cwd=project_copy)

    made = await asyncio.to_thread(run, "revision", "-m", "hand written data migration")
    assert made.returncode == 0, made.stderr
    # The post-write hooks tidy the file quietly: no lint report that reads like a failure.
    for noise in ("F401", "error", "Found", "Would fix"):
        assert noise not in made.stdout + made.stderr
    (script,) = versions.glob("*hand_written_data_migration.py")
    source = script.read_text()
    assert "from alembic import op" in source
    assert "import sqlalchemy as sa" in source

    # What a person then types into the empty functions, using both imports.
    script.write_text(
        source.replace(
            "def upgrade() -> None:\n    pass",
            "def upgrade() -> None:\n"
            '    op.create_table("template_test_hand", sa.Column("id", sa.Integer))\n'
            '    op.execute("INSERT INTO template_test_hand (id) VALUES (1), (2)")',
        ).replace(
            "def downgrade() -> None:\n    pass",
            'def downgrade() -> None:\n    op.drop_table("template_test_hand")',
        )
    )
    up = await asyncio.to_thread(run, "upgrade", "head")
    assert up.returncode == 0, up.stderr + up.stdout
    assert await db.fetch_all(migrated_db, "SELECT id FROM template_test_hand ORDER BY id") == [
        (1,),
        (2,),
    ]
    down = await asyncio.to_thread(run, "downgrade", "-1")
    assert down.returncode == 0, down.stderr
    assert "template_test_hand" not in await db.table_names(migrated_db)


async def test_drift_fails_one_test_that_says_what_to_write(
    server: URL, project_copy: Path
) -> None:
    """A model changed without a revision: one clear failure, not every API test failing."""
    shutil.copytree(
        PROJECT_ROOT / "tests", project_copy / "tests", ignore=shutil.ignore_patterns("__pycache__")
    )
    module = project_copy / "backend" / "modules" / "template_test_drift"
    module.mkdir()
    (module / "__init__.py").write_text("")
    (module / "models.py").write_text(
        "from backend.db.base import Base, UUIDPrimaryKey\n\n\n"
        "class Drifted(UUIDPrimaryKey, Base):\n"
        '    __tablename__ = "template_test_drifted"\n'
    )
    env = {**env_for(project_copy, server), "TEST_DATABASE_URL": db.sync_url(server)}
    result = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rs",
            "tests/migrations/test_migrations.py::test_models_match_migrations",
            "tests/modules/user/test_user.py",
        ],
        cwd=project_copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    summary = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 1, result.stdout
    assert summary.startswith("1 failed"), summary
    assert "skipped" in summary, summary
    assert "passed" not in summary, summary
    assert "template_test_drifted" in result.stdout
    assert "Write a revision: `uv run alembic revision --autogenerate -m" in result.stdout
    assert "models and migrations differ: see test_models_match_migrations" in result.stdout
