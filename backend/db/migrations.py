"""Alembic plumbing shared by env.py, the readiness probe and the tests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TypeVar

from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from backend.core.config import PROJECT_ROOT, Settings

ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"
SCRIPT_LOCATION = Path(__file__).resolve().parents[1] / "alembic"

T = TypeVar("T")

# One key for "a migration run is in progress"; advisory locks are per database.
MIGRATION_LOCK_KEY = 0x616C656D6269635F  # "alembic_"

# SQLSTATEs a migration run explains in one line instead of a traceback.
LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout fired
QUERY_CANCELED = "57014"  # statement_timeout fired
NOT_NULL_VIOLATION = "23502"
INSUFFICIENT_PRIVILEGE = "42501"
INVALID_PASSWORD = "28P01"
INVALID_AUTHORIZATION = "28000"  # no such role, or pg_hba.conf refused it
INVALID_CATALOG_NAME = "3D000"  # no such database
UNDEFINED_FILE = "58P01"  # the extension's files are not installed on the server
FEATURE_NOT_SUPPORTED = "0A000"  # "extension ... is not available" on some servers

# What the day-one commands look like right after the quick start (uv may not be on PATH).
ALEMBIC_COMMAND = "python3 dev.py alembic"


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
def migration_lock(connection: Connection, *, wait: float, poll: float = 0.25) -> Iterator[None]:
    """Hold the database's migration advisory lock for the duration of the block.

    Polls `pg_try_advisory_lock` instead of blocking in `pg_advisory_lock`: a blocked lock
    request can deadlock against `CREATE INDEX CONCURRENTLY` in another replica's run, and a
    bounded wait lets an init container fail with a message instead of hanging. The
    transaction the lock query opens is committed before returning, so Alembic starts with no
    transaction in progress and manages (and commits) its own.
    """
    deadline = time.monotonic() + wait
    while True:
        got = connection.execute(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
        ).scalar_one()
        connection.commit()
        if got:
            break
        if time.monotonic() >= deadline:
            pid, holder = _lock_holder(connection)
            connection.commit()
            raise MigrationLockTimeout(
                f"gave up after {wait:g}s waiting for the migration lock held by {holder} "
                f"(another replica migrating this database?). If it is still migrating, wait "
                f"for it or raise MIGRATION_LOCK_WAIT. If its process is gone (a killed "
                f"`alembic upgrade` or a deleted pod), the server finishes its last statement and "
                f"then frees the lock; to stop it now, cancel that statement (its revision rolls "
                f"back), then end the session: SELECT pg_cancel_backend({pid or '<pid>'}); then "
                f"SELECT pg_terminate_backend({pid or '<pid>'});"
            )
        time.sleep(poll)
    try:
        yield
    finally:
        # A pooled connection would keep a session lock: release it explicitly.
        if connection.in_transaction():
            connection.rollback()
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
        connection.commit()


def time_limits(settings: Settings) -> list[str]:
    """The statements that bound a migration run's waits (also printed by `--sql`)."""
    lock_ms = int(settings.migration_lock_timeout * 1000)
    statement_ms = int(settings.migration_statement_timeout * 1000)
    return [f"SET lock_timeout = {lock_ms}", f"SET statement_timeout = {statement_ms}"]


@contextmanager
def migrating(connection: Connection, settings: Settings) -> Iterator[None]:
    """A migration run's policy, around the block that runs it: the advisory lock every replica
    takes (waiting at most MIGRATION_LOCK_WAIT), then the run's time limits
    (MIGRATION_LOCK_TIMEOUT, MIGRATION_STATEMENT_TIMEOUT), set only once the lock is held, so
    waiting for it is never cut short, and reset before it is released."""
    with migration_lock(connection, wait=settings.migration_lock_wait):
        for statement in time_limits(settings):
            connection.exec_driver_sql(statement)
        connection.commit()
        try:
            yield
        finally:
            if connection.in_transaction():
                connection.rollback()
            connection.execute(text("RESET lock_timeout"))
            connection.execute(text("RESET statement_timeout"))
            connection.commit()


def _lock_holder(connection: Connection) -> tuple[int | None, str]:
    """Who holds the migration lock, as pg_stat_activity sees them."""
    row = connection.execute(
        text(
            "SELECT a.pid, a.application_name, a.client_addr, a.state, "
            "to_char(a.state_change AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS since, "
            "left(regexp_replace(a.query, '\\s+', ' ', 'g'), 120) AS query "
            "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND ((l.classid::bigint << 32) | l.objid::bigint) = :key LIMIT 1"
        ),
        {"key": MIGRATION_LOCK_KEY},
    ).one_or_none()
    if row is None or row.pid is None:
        return None, "another session"
    who = f"process {row.pid}"
    details = [
        f"application {row.application_name!r}" if row.application_name else "",
        f"from {row.client_addr}" if row.client_addr else "",
        f"{row.state} since {row.since} UTC" if row.state else "",
        f"last statement: {row.query}" if row.query else "",
    ]
    described = ", ".join(d for d in details if d)
    return row.pid, f"{who} ({described})" if described else who


def sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def describe_failure(
    exc: BaseException,
    *,
    url: URL,
    lock_timeout: float,
    statement_timeout: float,
) -> str | None:
    """One actionable message for the failures people meet, or None to show the traceback.

    `url` is shown without its password. Each message says what happened, where, and what to do.
    """
    where = f"{url.host or url.query.get('host') or 'localhost'}:{url.port or 5432}"
    if isinstance(exc, TimeoutError | OSError) and not isinstance(exc, DBAPIError):
        return (
            f"cannot reach the database at {where} ({type(exc).__name__}: {exc}). "
            f"DATABASE_URL is {url.render_as_string(hide_password=True)}: is PostgreSQL running "
            f"there and the host and port right? Unset DATABASE_URL to use the embedded one."
        )
    if not isinstance(exc, DBAPIError):
        return None
    code = sqlstate(exc)
    detail = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
    statement = (exc.statement or "").strip()
    if code in (INVALID_PASSWORD, INVALID_AUTHORIZATION):
        return (
            f"the server at {where} refused the login ({detail}): check the user and password "
            f"in DATABASE_URL, and that the server's pg_hba.conf lets this host in."
        )
    if code == INVALID_CATALOG_NAME:
        return (
            f"{detail} on {where}: create it first (`CREATE DATABASE {url.database};` or "
            f"`createdb {url.database}`), or fix the name in DATABASE_URL."
        )
    if "DROP EXTENSION" in statement.upper() and code == INSUFFICIENT_PRIVILEGE:
        return (
            f"the role {url.username!r} may not drop an extension it does not own ({detail}). "
            f"The downgrade stopped and its revision was rolled back; leave the extension, or "
            f"have its owner (the DBA) drop it, and write the revision's downgrade to skip it."
        )
    if "EXTENSION" in statement.upper() and code == INSUFFICIENT_PRIVILEGE:
        return (
            f"the role {url.username!r} may not create the pgvector extension ({detail}). "
            f"Have a superuser, the DBA or the provider's console run this once in "
            f"database {url.database!r}:  CREATE EXTENSION IF NOT EXISTS vector;  "
            f"then run the upgrade again (the revision's IF NOT EXISTS is then a no-op)."
        )
    if "EXTENSION" in statement.upper() and code in (UNDEFINED_FILE, FEATURE_NOT_SUPPORTED):
        return (
            f"pgvector is not installed on the server at {where} ({detail}). Install it "
            f"(Debian/Ubuntu: postgresql-<version>-pgvector; Docker: the pgvector/pgvector "
            f"image; managed PostgreSQL: enable the `vector` extension in the provider's "
            f"console), then run the upgrade again."
        )
    if code == NOT_NULL_VIOLATION:
        return (
            f"{detail}. The table has rows, and a NOT NULL column without a server default "
            f"cannot be added to it (`default=` in a model is applied by Python only). In the "
            f"revision, give the column `server_default=`, or add it nullable, backfill it, "
            f"then `op.alter_column(..., nullable=False)`. The failed revision was rolled back."
        )
    if code == LOCK_NOT_AVAILABLE:
        return (
            f"migration stopped after lock_timeout ({lock_timeout:g}s): "
            f"another transaction holds a lock on a table this migration changes ({detail}). "
            f"The failed migration was rolled back; `{ALEMBIC_COMMAND} current` shows where the "
            f"database is. Find the blocker in pg_stat_activity, or retry when traffic is "
            f"quieter (MIGRATION_LOCK_TIMEOUT sets the wait)."
        )
    if code == QUERY_CANCELED:
        return (
            f"migration stopped after statement_timeout ({statement_timeout:g}s): {detail}. "
            f"The failed migration was rolled back; MIGRATION_STATEMENT_TIMEOUT sets the limit."
        )
    return None


def describe_revision_error(message: str, heads: list[str]) -> str | None:
    """Alembic's own errors about the revision graph, with the command that resolves them."""
    if message.startswith("Multiple head revisions") or message.startswith("Multiple heads"):
        return (
            f"the migrations have {len(heads)} heads ({', '.join(heads)}): two branches each "
            f'added a revision. Join them with `{ALEMBIC_COMMAND} merge heads -m "merge"`, '
            f"commit the merge revision, then upgrade."
        )
    if message == "Ambiguous walk":
        return (
            "`downgrade -1` is ambiguous at a merge revision (it has more than one parent). "
            f"Name the target instead: `{ALEMBIC_COMMAND} downgrade <one of the merged "
            f"revisions>` undoes the merge and leaves both branches applied; "
            f"`{ALEMBIC_COMMAND} history` lists them."
        )
    return None
