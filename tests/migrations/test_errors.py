"""The failures people meet on day one: one message that says what to do, no traceback."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic import command
from alembic.util import CommandError
from sqlalchemy import Connection, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine

from backend.core.config import PROJECT_ROOT
from backend.db.migrations import alembic_config, head_revisions
from tests.support import db
from tests.support.alembic_cli import alembic, write_revisions

pytestmark = [pytest.mark.slow]

HEAD = head_revisions()[0]


def output(result: subprocess.CompletedProcess[str]) -> str:
    text = result.stdout + result.stderr
    assert result.returncode != 0, text
    assert "Traceback" not in text
    return text


def test_unreachable_database_names_the_host_and_the_setting() -> None:
    url = URL.create("postgresql", "app", "s3cret-pw", "127.0.0.1", 1, "app")
    text = output(alembic("upgrade", "head", env=db.alembic_env(url)))

    assert "cannot reach the database at 127.0.0.1:1" in text
    assert "DATABASE_URL" in text
    assert "s3cret-pw" not in text


def test_rejected_login_and_missing_database_say_what_to_fix(server: URL) -> None:
    no_role = output(alembic("current", env=db.alembic_env(server.set(username="nobody_x"))))
    assert "refused the login" in no_role
    assert "user and password in DATABASE_URL" in no_role

    no_db = output(alembic("current", env=db.alembic_env(server.set(database="no_such_db_x"))))
    assert 'database "no_such_db_x" does not exist' in no_db
    assert "CREATE DATABASE no_such_db_x" in no_db


@pytest.fixture
async def unprivileged_db(server: URL) -> AsyncIterator[URL]:
    """A database owned by a role that is not a superuser, as on a managed PostgreSQL."""
    role = f"template_test_role_{uuid.uuid4().hex[:8]}"
    name = f"test_{uuid.uuid4().hex[:12]}"
    await db.on_server(server, f'CREATE ROLE "{role}" LOGIN')
    await db.on_server(server, f'CREATE DATABASE "{name}" OWNER "{role}"')
    yield server.set(database=name, username=role, password=None)
    await db.drop_database(server, name)
    await db.on_server(server, f'DROP ROLE "{role}"')


async def test_a_role_that_cannot_create_the_extension_is_told_what_the_dba_runs(
    unprivileged_db: URL,
) -> None:
    result = await asyncio.to_thread(
        alembic, "upgrade", "head", env=db.alembic_env(unprivileged_db)
    )
    text = output(result)

    assert "may not create the pgvector extension" in text
    assert "CREATE EXTENSION IF NOT EXISTS vector;" in text
    assert await db.current_revisions(unprivileged_db) == set()


async def test_a_role_that_does_not_own_the_extension_downgrades_to_base_leaving_it(
    server: URL, unprivileged_db: URL
) -> None:
    """The DBA created `vector` (a superuser owns it); the app's role migrates up and down."""
    await db.execute(server.set(database=unprivileged_db.database), "CREATE EXTENSION vector")
    env = db.alembic_env(unprivileged_db)
    up = await asyncio.to_thread(alembic, "upgrade", "head", env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    down = await asyncio.to_thread(alembic, "downgrade", "base", env=env)

    assert down.returncode == 0, down.stdout + down.stderr
    assert await db.current_revisions(unprivileged_db) == set()
    assert await db.table_names(unprivileged_db) <= {"alembic_version"}
    extensions = await db.fetch_all(unprivileged_db, "SELECT extname FROM pg_extension")
    assert ("vector",) in extensions  # as the DBA left it


async def test_two_heads_say_merge_and_a_merge_downgrades_by_name(
    migrated_db: URL, tmp_path: Path
) -> None:
    two_heads = write_revisions(
        tmp_path / "branches",
        {"branch0a": (HEAD, "pass"), "branch0b": (HEAD, "pass")},
    )
    env = db.alembic_env(migrated_db)

    refused = output(alembic("-c", str(two_heads), "upgrade", "head", env=env))
    assert "2 heads" in refused
    assert "merge heads" in refused
    assert await db.current_revisions(migrated_db) == {HEAD}

    merged = write_revisions(
        tmp_path / "merged",
        {
            "branch0a": (HEAD, "pass"),
            "branch0b": (HEAD, "pass"),
            "merge0ab": (("branch0a", "branch0b"), "pass"),
        },
    )
    up = alembic("-c", str(merged), "upgrade", "head", env=env)
    assert up.returncode == 0, up.stderr
    ambiguous = output(alembic("-c", str(merged), "downgrade", "-1", env=env))
    assert "ambiguous at a merge revision" in ambiguous
    assert "downgrade <one of the merged revisions>" in ambiguous

    # What the message (and the README) say to do instead.
    down = alembic("-c", str(merged), "downgrade", "branch0a", env=env)
    assert down.returncode == 0, down.stderr
    assert await db.current_revisions(migrated_db) == {"branch0a", "branch0b"}


def test_a_bad_setting_is_one_line_for_alembic_and_the_app() -> None:
    env = db.alembic_env(URL.create("postgresql", host="127.0.0.1", port=1, database="x"))
    env["DB_POOL_SIZE"] = "zero"

    text = output(alembic("current", env=env))
    assert "invalid settings: DB_POOL_SIZE" in text

    app = subprocess.run(
        [sys.executable, "-c", "from backend.main import app"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=PROJECT_ROOT,
    )
    assert "backend: invalid settings: DB_POOL_SIZE" in output(app)


def test_run_from_backend_says_run_from_the_repository_root(template_db: URL) -> None:
    env = db.alembic_env(template_db)
    for args in (["current"], ["revision", "-m", "from the wrong place"]):
        text = output(alembic(*args, env=env, cwd=PROJECT_ROOT / "backend"))
        assert "run Alembic from the repository root" in text
    assert not list((PROJECT_ROOT / "backend" / "alembic" / "versions").glob("*wrong_place*"))


async def test_programs_driving_alembic_are_told_what_it_needs(migrated_db: URL) -> None:
    """The two ways a program can hand env.py what it cannot use; the ones it can are tested
    everywhere else (a Connection in tests.db, an AsyncEngine in test_pytest_alembic)."""
    engine = create_async_engine(migrated_db)
    try:
        config = alembic_config()
        config.attributes["connection"] = engine
        with pytest.raises(CommandError, match=r"call them in a thread"):
            command.upgrade(config, "head")  # on this thread's running event loop

        def inside_a_transaction(connection: Connection) -> None:
            connection.execute(text("SELECT 1"))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

        async with engine.connect() as connection:
            with pytest.raises(CommandError, match="no transaction open"):
                await connection.run_sync(inside_a_transaction)
    finally:
        await engine.dispose()
    assert await db.current_revisions(migrated_db) == {HEAD}
