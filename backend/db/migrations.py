"""Alembic plumbing shared by env.py, the readiness probe and the tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, text

from backend.core.config import PROJECT_ROOT

ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"
SCRIPT_LOCATION = Path(__file__).resolve().parents[1] / "alembic"

T = TypeVar("T")

# One key for "a migration run is in progress"; advisory locks are per database.
MIGRATION_LOCK_KEY = 0x616C656D6269635F  # "alembic_"

# SQLSTATE 55P03: lock_not_available (lock_timeout fired).
LOCK_NOT_AVAILABLE = "55P03"
# SQLSTATE 57014: query_canceled (statement_timeout fired).
QUERY_CANCELED = "57014"


def alembic_config(ini: Path | None = None) -> Config:
    """The project's Alembic config, usable from any working directory."""
    config = Config(str(ini or ALEMBIC_INI))
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    return config


@cache
def _scripts() -> ScriptDirectory:
    # Read once per process: the readiness probe asks often.
    return ScriptDirectory(str(SCRIPT_LOCATION))


@cache
def head_revisions() -> tuple[str, ...]:
    return tuple(sorted(_scripts().get_heads()))


@cache
def known_revisions() -> frozenset[str]:
    """Every revision id this code has a script for."""
    return frozenset(rev.revision for rev in _scripts().walk_revisions())


class MigrationLockTimeout(CommandError):
    pass


@contextmanager
def migration_lock(
    connection: Connection, *, wait: float, commit: bool = True, poll: float = 0.25
) -> Iterator[None]:
    """Hold the database's migration advisory lock for the duration of the block.

    Polls `pg_try_advisory_lock` instead of blocking in `pg_advisory_lock`: a blocked lock
    request can deadlock against `CREATE INDEX CONCURRENTLY` in another replica's run, and a
    bounded wait lets an init container fail with a message instead of hanging. The
    transaction the lock query opens is committed before returning, so Alembic starts with no
    transaction in progress and manages (and commits) its own. With `commit=False` the caller's
    transaction is left alone (a program that handed Alembic a connection inside a
    transaction), and the lock is a transaction lock that ends with it.
    """
    end = connection.commit if commit else (lambda: None)
    try_lock = "pg_try_advisory_lock" if commit else "pg_try_advisory_xact_lock"
    deadline = time.monotonic() + wait
    while True:
        got = connection.execute(
            text(f"SELECT {try_lock}(:key)"), {"key": MIGRATION_LOCK_KEY}
        ).scalar_one()
        end()
        if got:
            break
        if time.monotonic() >= deadline:
            holder = _lock_holder(connection)
            end()
            who = f"process {holder}" if holder else "another session"
            raise MigrationLockTimeout(
                f"gave up after {wait:g}s waiting for the migration lock held by {who} "
                f"(another replica is migrating this database?); raise MIGRATION_LOCK_WAIT "
                f"or retry when it is done"
            )
        time.sleep(poll)
    if not commit:
        yield
        return
    try:
        yield
    finally:
        # A pooled connection would keep a session lock: release it explicitly.
        if connection.in_transaction():
            connection.rollback()
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
        connection.commit()


def _lock_holder(connection: Connection) -> int | None:
    return connection.execute(
        text(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND ((classid::bigint << 32) | objid::bigint) = :key LIMIT 1"
        ),
        {"key": MIGRATION_LOCK_KEY},
    ).scalar_one_or_none()


def run_async(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even inside a running event loop.

    Alembic's commands are synchronous; when they are called from async code (a test, an app's
    start-up) the loop is busy, so the coroutine gets a loop of its own in a worker thread.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()
