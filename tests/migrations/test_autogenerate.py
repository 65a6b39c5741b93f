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
from tests import db
from tests.migrations.cli import alembic

VECTOR_MODULE = """
import uuid

from pgvector.sqlalchemy import Vector
from sqlalchemy import ForeignKey, Index, Text
from sqlalchemy.orm import Mapped, mapped_column

from backend.db.base import Base, Timestamps, UUIDPrimaryKey


class Passage(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "passages"

    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(Text)
    embedding: Mapped[list[float]] = mapped_column(Vector(8))

    __table_args__ = (
        Index(
            "ix_passages_embedding_hnsw",
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
    module = project_copy / "backend" / "modules" / "passage"
    module.mkdir()
    (module / "__init__.py").write_text("")
    (module / "models.py").write_text(VECTOR_MODULE)
    env = env_for(project_copy, migrated_db)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return alembic(*args, env=env, cwd=project_copy)

    # The new module is seen with no edit outside its folder: the database now lags the models.
    check = await asyncio.to_thread(run, "check")
    assert check.returncode != 0
    assert "passages" in check.stderr + check.stdout

    made = await asyncio.to_thread(run, "revision", "--autogenerate", "-m", "add passages")
    assert made.returncode == 0, made.stderr
    scripts = list((project_copy / "backend" / "alembic" / "versions").glob("*add_passages.py"))
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
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_passages_embedding_hnsw'",
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
    assert "passages" not in await db.table_names(migrated_db)
