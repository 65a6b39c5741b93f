"""Replicas migrating at once, migrations stuck behind locks, the lock's own wait."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine

from backend.db.migrations import MIGRATION_LOCK_KEY, SCRIPT_LOCATION, head_revisions
from tests.support import db
from tests.support.alembic_cli import alembic, chain_plus, start_alembic

pytestmark = [pytest.mark.slow]

HEAD = head_revisions()[0]


async def test_eight_replicas_upgrade_one_database_at_once(empty_db: URL, tmp_path: Path) -> None:
    # A slow revision after head keeps the first runner inside the lock while the others arrive.
    ini = chain_plus(
        tmp_path,
        revision="slow0000test",
        down_revision=HEAD,
        upgrade=(
            'op.execute("SELECT pg_sleep(2)"); '
            'op.create_table("template_test_slow", sa.Column("id", sa.Integer, primary_key=True))'
        ),
        downgrade='op.drop_table("template_test_slow")',
    )
    env = db.alembic_env(empty_db)

    runners = [start_alembic("-c", str(ini), "upgrade", "head", env=env) for _ in range(8)]
    outputs = await asyncio.gather(*(asyncio.to_thread(r.communicate, None, 180) for r in runners))

    failures = [err for r, (_, err) in zip(runners, outputs, strict=True) if r.returncode != 0]
    assert failures == []
    logs = "".join(err for _, err in outputs)
    # Every revision ran exactly once across the eight processes (merges and branches included).
    revisions = [s.revision for s in ScriptDirectory(str(SCRIPT_LOCATION)).walk_revisions()]
    assert db.upgrades_applied(logs) == dict.fromkeys([*revisions, "slow0000test"], 1)
    assert await db.current_revisions(empty_db) == {"slow0000test"}
    # The ones that waited re-read the revision after getting the lock and did nothing.
    assert logs.count("Migration lock held; database at slow0000test") == 7
    # LangGraph's checkpointer migrations too: each version applied and recorded once.
    versions = await db.fetch_all(empty_db, "SELECT v FROM checkpoint_migrations ORDER BY v")
    assert [row[0] for row in versions] == list(range(10))


async def test_migration_behind_a_long_transaction_fails_fast(
    migrated_db: URL, tmp_path: Path
) -> None:
    ini = chain_plus(
        tmp_path,
        revision="addcol00test",
        down_revision=HEAD,
        upgrade='op.add_column("users", sa.Column("template_test_probe", sa.Text()))',
        downgrade='op.drop_column("users", "template_test_probe")',
    )
    env = db.alembic_env(migrated_db, MIGRATION_LOCK_TIMEOUT="1")

    engine = create_async_engine(migrated_db)
    try:
        async with engine.connect() as blocker:
            # An open transaction that has read `users` holds a lock ALTER TABLE must wait for.
            await blocker.execute(text("SELECT count(*) FROM users"))
            started = time.monotonic()
            result = await asyncio.to_thread(
                alembic, "-c", str(ini), "upgrade", "head", env=env, timeout=60
            )
            elapsed = time.monotonic() - started
            await blocker.rollback()
    finally:
        await engine.dispose()

    assert result.returncode != 0
    assert "lock_timeout (1s)" in result.stderr
    assert "another transaction holds a lock" in result.stderr
    assert elapsed < 30  # without lock_timeout it would wait as long as the blocker lives
    assert await db.current_revisions(migrated_db) == {HEAD}
    columns = await db.fetch_all(
        migrated_db,
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'users'",
    )
    assert ("template_test_probe",) not in columns


async def test_gives_up_waiting_for_another_runner_and_names_it(migrated_db: URL) -> None:
    env = db.alembic_env(migrated_db, MIGRATION_LOCK_WAIT="1")
    engine = create_async_engine(migrated_db)
    try:
        async with engine.connect() as holder:
            pid = (await holder.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            await holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            await holder.commit()
            result = await asyncio.to_thread(alembic, "upgrade", "head", env=env, timeout=60)
            await holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
    finally:
        await engine.dispose()

    assert result.returncode != 0
    assert f"waiting for the migration lock held by process {pid}" in result.stderr


async def test_lock_is_released_after_a_run(migrated_db: URL) -> None:
    result = await asyncio.to_thread(alembic, "upgrade", "head", env=db.alembic_env(migrated_db))
    assert result.returncode == 0, result.stderr

    rows = await db.fetch_all(
        migrated_db, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
    )
    assert rows == [(0,)]


def test_offline_sql_needs_no_database() -> None:
    # Nothing listens on port 1: offline mode must not try.
    env = {**db.alembic_env(URL.create("postgresql", host="127.0.0.1", port=1, database="x"))}
    result = alembic("upgrade", "head", "--sql", env=env)

    assert result.returncode == 0, result.stderr
    assert "CREATE EXTENSION IF NOT EXISTS vector;" in result.stdout
    assert "CREATE TABLE users" in result.stdout
    assert "SET lock_timeout = 5000;" in result.stdout
    assert "127.0.0.1" not in result.stdout


async def test_older_release_finds_database_ahead_and_does_nothing(
    migrated_db: URL, tmp_path: Path
) -> None:
    # A newer release (this chain plus one revision) migrated the database...
    ini = chain_plus(
        tmp_path,
        revision="newer0000test",
        down_revision=HEAD,
        upgrade=(
            'op.create_table("template_test_newer", sa.Column("id", sa.Integer, primary_key=True))'
        ),
        downgrade='op.drop_table("template_test_newer")',
    )
    env = db.alembic_env(migrated_db)
    assert alembic("-c", str(ini), "upgrade", "head", env=env).returncode == 0

    # ...then a pod of this (older) release restarts: its init container must not crash-loop.
    older = alembic("upgrade", "head", env=env)
    assert older.returncode == 0, older.stderr
    assert "Database at newer0000test, which this code has no script for" in older.stderr
    assert f"`alembic downgrade {HEAD}` from the newer image" in older.stderr
    assert await db.current_revisions(migrated_db) == {"newer0000test"}

    # Anything but an upgrade to head still refuses an unknown revision.
    assert alembic("downgrade", "-1", env=env).returncode != 0
    # The newer image takes the database back, as the message says.
    back = alembic("-c", str(ini), "downgrade", HEAD, env=env)
    assert back.returncode == 0, back.stderr
    assert await db.current_revisions(migrated_db) == {HEAD}
    assert "template_test_newer" not in await db.table_names(migrated_db)


async def test_read_only_commands_answer_while_a_migration_holds_the_lock(
    migrated_db: URL,
) -> None:
    """`current` is what the lock-timeout message and the rollback recipe tell people to run."""
    # If any of them waited for the lock, it would wait this long and the call would time out.
    env = db.alembic_env(migrated_db, MIGRATION_LOCK_WAIT="600")
    engine = create_async_engine(migrated_db)
    try:
        async with engine.connect() as holder:
            await holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            await holder.commit()
            results = {
                " ".join(args): await asyncio.to_thread(alembic, *args, env=env, timeout=60)
                for args in (
                    ("current",),
                    ("check",),
                    ("heads",),
                    ("history", "--indicate-current"),
                    ("upgrade", "head", "--sql"),
                )
            }
            writer = await asyncio.to_thread(
                alembic, "stamp", "head", env={**env, "MIGRATION_LOCK_WAIT": "1"}, timeout=60
            )
            await holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
    finally:
        await engine.dispose()

    for command, result in results.items():
        assert result.returncode == 0, f"{command}: {result.stderr}"
    assert HEAD in results["current"].stdout
    # A command that writes still waits its turn.
    assert writer.returncode != 0
    assert "waiting for the migration lock" in writer.stdout + writer.stderr


async def test_a_killed_migration_is_named_with_how_to_end_it(
    migrated_db: URL, tmp_path: Path
) -> None:
    """kill -9 on `alembic upgrade`: its statement runs on in the server, holding the lock."""
    ini = chain_plus(
        tmp_path,
        revision="sleep0000test",
        down_revision=HEAD,
        upgrade='op.execute("SELECT pg_sleep(60)")',
    )
    env = db.alembic_env(migrated_db)
    runner = start_alembic("-c", str(ini), "upgrade", "head", env=env)
    find = (
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND query LIKE 'SELECT pg_sleep(60)%'"
    )
    try:
        async with asyncio.timeout(60):
            rows: list[tuple[object, ...]] = []
            while not rows:
                await asyncio.sleep(0.2)
                rows = await db.fetch_all(migrated_db, find)
    finally:
        runner.kill()
        await asyncio.to_thread(runner.communicate)
    [(pid,)] = rows

    waited = await asyncio.to_thread(
        alembic, "upgrade", "head", env={**env, "MIGRATION_LOCK_WAIT": "1"}, timeout=60
    )

    message = waited.stdout + waited.stderr
    assert waited.returncode != 0
    assert f"held by process {pid} (application 'alembic on " in message
    assert "last statement: SELECT pg_sleep(60)" in message
    assert f"SELECT pg_cancel_backend({pid}); then SELECT pg_terminate_backend({pid});" in message
    # Doing what it says frees the lock, and the killed revision was never recorded.
    await db.execute(migrated_db, f"SELECT pg_cancel_backend({pid})")
    await db.execute(migrated_db, f"SELECT pg_terminate_backend({pid})")
    again = await asyncio.to_thread(alembic, "upgrade", "head", env=env, timeout=60)
    assert again.returncode == 0, again.stderr
    assert await db.current_revisions(migrated_db) == {HEAD}
