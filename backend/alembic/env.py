"""Alembic environment: async, locked against concurrent runs, blind to tables it does not own."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from logging.config import fileConfig
from typing import Any

from alembic import context
from alembic.autogenerate.api import AutogenContext
from alembic.operations.ops import MigrationScript
from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError, msg
from sqlalchemy import Connection, pool, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from backend.core.config import get_settings
from backend.db.base import Base
from backend.db.discovery import import_models
from backend.db.migrations import (
    LOCK_NOT_AVAILABLE,
    QUERY_CANCELED,
    migration_lock,
    run_async,
)

config = context.config
# A connection handed in means a program (a test, a tool) drives Alembic and owns logging.
handed_in = config.attributes.get("connection")
if handed_in is None and config.config_file_name and config.file_config.has_section("formatters"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)
logger = logging.getLogger("alembic.env")

settings = get_settings()
import_models()
target_metadata = Base.metadata


def include_name(name: str | None, type_: str, parent_names: dict[str, str | None]) -> bool:
    """Hide tables other tools own (LangGraph's `checkpoint*`): never created, dropped, reported."""
    if type_ == "table" and name is not None:
        return not name.startswith(settings.alembic_ignore_table_prefixes)
    return True


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | bool:
    """Import the module of every non-SQLAlchemy type a script renders.

    Alembic renders `pgvector.sqlalchemy.vector.VECTOR(dim=384)` but adds no import for it, so
    the script fails with `NameError: name 'pgvector' is not defined`. Same for any third-party
    type.
    """
    if type_ == "type":
        module = type(obj).__module__
        if module.split(".")[0] not in ("sqlalchemy", "builtins"):
            autogen_context.imports.add(f"import {module}")
    return False


def process_revision_directives(
    migration_context: MigrationContext,
    revision: str | Iterable[str | None] | Iterable[str],
    directives: list[MigrationScript],
) -> None:
    """`alembic revision --autogenerate` that finds nothing writes no file.

    Only for the command line's `revision`: `alembic check` runs this hook too and must keep its
    directives, and a program calling `command.revision()` gets the script back to inspect.
    """
    command = getattr(config.cmd_opts, "cmd", None)
    if not command or command[0].__name__ != "revision":
        return
    if not getattr(config.cmd_opts, "autogenerate", False):
        return
    script = directives[0]
    if script.upgrade_ops is not None and script.upgrade_ops.is_empty():
        directives[:] = []
        msg("No changes in schema detected; no revision file written.")


COMMON_OPTIONS: dict[str, Any] = {
    "target_metadata": target_metadata,
    "include_name": include_name,
    "render_item": render_item,
    "process_revision_directives": process_revision_directives,
    "compare_type": True,
    "compare_server_default": True,
    "transaction_per_migration": True,
}


def _timeout_sql(local: bool) -> list[str]:
    scope = "LOCAL " if local else ""
    lock_ms = int(settings.migration_lock_timeout * 1000)
    statement_ms = int(settings.migration_statement_timeout * 1000)
    return [
        f"SET {scope}lock_timeout = {lock_ms}",
        f"SET {scope}statement_timeout = {statement_ms}",
    ]


def _explain(exc: DBAPIError) -> CommandError | None:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    detail = str(exc.orig).strip()
    if code == LOCK_NOT_AVAILABLE:
        return CommandError(
            f"migration stopped after lock_timeout ({settings.migration_lock_timeout:g}s): "
            f"another transaction holds a lock on a table this migration changes ({detail}). "
            f"The failed migration was rolled back; `alembic current` shows where the database "
            f"is. Find the blocker in pg_stat_activity, or retry when traffic is quieter "
            f"(MIGRATION_LOCK_TIMEOUT sets the wait)."
        )
    if code == QUERY_CANCELED:
        return CommandError(
            f"migration stopped after statement_timeout "
            f"({settings.migration_statement_timeout:g}s): {detail}. The failed migration was "
            f"rolled back; MIGRATION_STATEMENT_TIMEOUT sets the limit."
        )
    return None


def _upgrading_to_head() -> bool:
    opts = context.get_context().opts
    fn = opts.get("fn")
    return getattr(fn, "__name__", "") == "upgrade" and opts.get("destination_rev") in (
        "head",
        "heads",
    )


def _migrate(connection: Connection) -> None:
    context.configure(connection=connection, **COMMON_OPTIONS)
    # Read after the lock is held: another replica may have just finished the same work.
    current = context.get_context().get_current_heads()
    logger.info("Migration lock held; database at %s", ", ".join(current) or "base")
    unknown = set(current) - {script.revision for script in context.script.walk_revisions()}
    if unknown and _upgrading_to_head():
        # An older release's pod restarting mid-rollout (or after a rollback of the code only):
        # its init container must not crash-loop on a revision only the newer image knows.
        logger.warning(
            "Database at %s, which this code has no script for: a newer release migrated it. "
            "Nothing to upgrade. To bring the schema back to this code's head, run "
            "`alembic downgrade %s` from the newer image.",
            ", ".join(sorted(unknown)),
            ", ".join(context.script.get_heads()),
        )
        return
    try:
        with context.begin_transaction():
            context.run_migrations()
    except DBAPIError as exc:
        explained = _explain(exc)
        if explained is None:
            raise
        raise explained from exc


def do_run_migrations(connection: Connection) -> None:
    if connection.in_transaction():
        # The caller's transaction: run inside it, leave commit/rollback to the caller.
        with migration_lock(connection, wait=settings.migration_lock_wait, commit=False):
            for statement in _timeout_sql(local=True):
                connection.exec_driver_sql(statement)
            _migrate(connection)
        return

    with migration_lock(connection, wait=settings.migration_lock_wait):
        # Only now, holding the lock: waiting for it must not be cut short by lock_timeout.
        for statement in _timeout_sql(local=False):
            connection.exec_driver_sql(statement)
        # Commit before configure: otherwise Alembic treats this transaction as the caller's
        # and never commits the DDL.
        connection.commit()
        try:
            _migrate(connection)
        finally:
            if connection.in_transaction():
                connection.rollback()
            connection.execute(text("RESET lock_timeout"))
            connection.execute(text("RESET statement_timeout"))
            connection.commit()


async def run_async_migrations(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.run_sync(do_run_migrations)


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if isinstance(connectable, Connection):
        do_run_migrations(connectable)
        return

    if isinstance(connectable, AsyncEngine):
        url = connectable.url
    elif connectable is None:
        url = settings.sqlalchemy_url()
    else:
        raise CommandError(
            f'config.attributes["connection"] must be a Connection or an AsyncEngine, '
            f"not {type(connectable).__name__}"
        )

    async def migrate() -> None:
        # A fresh engine without a pool: a handed-in engine's pooled connections may belong to
        # another event loop, and a migration run should leave no connection behind.
        engine = create_async_engine(url, poolclass=pool.NullPool)
        try:
            await run_async_migrations(engine)
        finally:
            await engine.dispose()

    run_async(migrate)


def run_migrations_offline() -> None:
    """Print the SQL (`alembic upgrade head --sql`) for a DBA to review; no database needed."""
    context.configure(
        dialect_name="postgresql",
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **COMMON_OPTIONS,
    )
    for statement in _timeout_sql(local=False):
        context.execute(statement)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
