"""Alembic environment: async, locked against concurrent runs, blind to tables it does not own."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from logging.config import fileConfig
from typing import Any

from alembic import context
from alembic.autogenerate.api import AutogenContext
from alembic.operations.ops import MigrationScript
from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError, msg
from sqlalchemy import Connection, pool
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from backend.core.config import PROJECT_ROOT, SettingsError, get_settings
from backend.core.logs import configure_logging
from backend.db.base import Base
from backend.db.discovery import ModuleDiscoveryError, import_models
from backend.db.embedded import EmbeddedDatabaseUnavailable
from backend.db.migrations import (
    describe_failure,
    describe_revision_error,
    migrating,
    time_limits,
)
from backend.db.review import order_table_drops, review
from backend.db.session import database_url

config = context.config
# A connection handed in means a program (a test, a tool) drives Alembic and owns logging.
handed_in = config.attributes.get("connection")
if handed_in is None and config.config_file_name and config.file_config.has_section("formatters"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)
logger = logging.getLogger("alembic.env")

if config.get_main_option("wrong_directory"):
    # backend/alembic.ini: someone ran Alembic from backend/ (as many guides do).
    raise CommandError(
        f"run Alembic from the repository root ({PROJECT_ROOT}), where alembic.ini is: "
        f"`cd .. && python3 dev.py alembic ...` (or `uv run alembic ...`)"
    )

try:
    settings = get_settings()
    import_models()
except (SettingsError, ModuleDiscoveryError) as exc:
    raise CommandError(str(exc)) from None
if handed_in is None and settings.logs_as == "json":
    # Production (an init container, a Job): the same JSON lines as the app's, not alembic.ini's.
    for handler in list(logging.getLogger().handlers):
        logging.getLogger().removeHandler(handler)
    configure_logging(settings.log_level, "json")
target_metadata = Base.metadata

# Steps of Alembic's commands that only read: `current`, `check`, `revision --autogenerate`,
# `history --indicate-current`. They never wait for another replica's migration lock.
READ_ONLY_STEPS = frozenset(
    {
        "display_version",
        "retrieve_migrations",
        "nothing",
        "show_current",
        "_display_current_history",
        "edit_current",
    }
)


def include_name(name: str | None, type_: str, parent_names: dict[str, str | None]) -> bool:
    """Hide tables other tools own (LangGraph's `checkpoint*`, its store's tables by exact name):
    never created, dropped, reported."""
    if type_ == "table" and name is not None:
        return not (
            name.startswith(settings.alembic_ignore_table_prefixes)
            or name in settings.alembic_ignore_tables
        )
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
    """`alembic revision --autogenerate`: no file when nothing changed, review notes otherwise.

    Alembic's documented recipe keys on the command line's `--autogenerate`, so `alembic check`
    and programs calling `command.revision()` get the plain directives.
    """
    if not getattr(config.cmd_opts, "autogenerate", False):
        return
    script = directives[0]
    if script.upgrade_ops is None or script.upgrade_ops.is_empty():
        directives[:] = []
        msg("No changes in schema detected; no revision file written.")
        return
    if script.downgrade_ops is not None:
        order_table_drops(script.upgrade_ops, script.downgrade_ops)
    notes = review(script.upgrade_ops)
    if notes:
        msg(f"Review {len(notes)} operation(s) before upgrading (marked `# REVIEW` in the script):")
        for note in notes:
            msg(f"  - {note.kind}: {note.message}")


COMMON_OPTIONS: dict[str, Any] = {
    "target_metadata": target_metadata,
    "include_name": include_name,
    "render_item": render_item,
    "process_revision_directives": process_revision_directives,
    "compare_type": True,
    "compare_server_default": True,
    "transaction_per_migration": True,
}


def _step() -> str:
    return getattr(context.get_context().opts.get("fn"), "__name__", "")


def _upgrading_to_head() -> bool:
    return _step() == "upgrade" and context.get_context().opts.get("destination_rev") in (
        "head",
        "heads",
    )


def _run() -> None:
    try:
        with context.begin_transaction():
            context.run_migrations()
    except CommandError as exc:
        explained = describe_revision_error(str(exc), list(context.script.get_heads()))
        if explained is None:
            raise
        raise CommandError(explained) from None


def _migrate() -> None:
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
    _run()


def do_run_migrations(connection: Connection) -> None:
    if connection.in_transaction():
        raise CommandError(
            "hand Alembic a connection with no transaction open: each revision commits in a "
            "transaction of its own (transaction_per_migration)"
        )
    # Configured with no transaction open, so Alembic manages (and commits) its own.
    context.configure(connection=connection, **COMMON_OPTIONS)
    if _step() in READ_ONLY_STEPS:
        # `current`, `check`, autogenerate: answer now, even while a migration runs.
        _run()
        return

    with migrating(connection, settings):
        _migrate()


@contextmanager
def _explaining(url: URL) -> Iterator[None]:
    """Turn the failures people meet into one line: Alembic prints a CommandError and exits 1."""
    try:
        yield
    except CommandError:
        raise
    except Exception as exc:
        message = describe_failure(
            exc,
            url=url,
            lock_timeout=settings.migration_lock_timeout,
            statement_timeout=settings.migration_statement_timeout,
        )
        if message is None:
            raise
        # The one line is the message; the chained traceback would bury it.
        raise CommandError(message) from None


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if isinstance(connectable, Connection):
        with _explaining(connectable.engine.url):
            do_run_migrations(connectable)
        return

    if isinstance(connectable, AsyncEngine):
        url = connectable.url
    elif connectable is None:
        try:
            url = database_url(settings)
        except EmbeddedDatabaseUnavailable as exc:
            raise CommandError(str(exc)) from None
    else:
        raise CommandError(
            f'config.attributes["connection"] must be a Connection or an AsyncEngine, '
            f"not {type(connectable).__name__}"
        )

    async def migrate() -> None:
        # A fresh engine without a pool: a handed-in engine's pooled connections may belong to
        # another event loop, and a migration run should leave no connection behind.
        # Named, so that pg_stat_activity (and a replica waiting for the lock) says who it is.
        name = f"alembic on {socket.gethostname()} pid {os.getpid()}"[:63]
        engine = create_async_engine(
            url,
            poolclass=pool.NullPool,
            connect_args={"server_settings": {"application_name": name}},
        )
        try:
            async with engine.connect() as connection:
                await connection.run_sync(do_run_migrations)
        finally:
            await engine.dispose()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise CommandError(
            "Alembic commands are synchronous and this thread runs an event loop: call them in "
            "a thread (`await asyncio.to_thread(command.upgrade, config, 'head')`), or hand in "
            "a connection (`await connection.run_sync(...)`, config.attributes['connection'])"
        )
    with _explaining(url):
        asyncio.run(migrate())


def run_migrations_offline() -> None:
    """Print the SQL (`alembic upgrade head --sql`) for a DBA to review; no database needed."""
    context.configure(
        dialect_name="postgresql",
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **COMMON_OPTIONS,
    )
    for statement in time_limits(settings):
        context.execute(statement)
    _run()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
