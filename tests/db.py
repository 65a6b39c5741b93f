"""Test databases: created and dropped on the test server, one per need."""

from __future__ import annotations

import configparser
import os
import uuid
from collections.abc import Callable
from pathlib import Path

from alembic import command
from sqlalchemy import Connection, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from backend.core.config import PROJECT_ROOT, normalise_database_url
from backend.db.embedded import embedded_database_url
from backend.db.migrations import ALEMBIC_INI, SCRIPT_LOCATION, alembic_config

TEST_EMBEDDED_DIR = PROJECT_ROOT / ".data" / "postgres-test"


def server_url() -> URL:
    """The server tests make databases on: TEST_DATABASE_URL, else an embedded one."""
    raw = os.environ.get("TEST_DATABASE_URL", "").strip()
    if raw:
        return normalise_database_url(raw, name="TEST_DATABASE_URL")
    return make_url(embedded_database_url(TEST_EMBEDDED_DIR))


def database_url(server: URL, name: str) -> URL:
    return server.set(database=name)


def sync_url(url: URL) -> str:
    """The URL as text, password included, for a subprocess's DATABASE_URL."""
    return url.render_as_string(hide_password=False)


async def _on_server(server: URL, statement: str) -> None:
    # CREATE/DROP DATABASE cannot run inside a transaction.
    engine = create_async_engine(server, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


async def create_database(server: URL, *, template: str | None = None) -> URL:
    name = f"test_{uuid.uuid4().hex[:12]}"
    clause = f' TEMPLATE "{template}"' if template else ""
    await _on_server(server, f'CREATE DATABASE "{name}"{clause}')
    return database_url(server, name)


async def drop_database(server: URL, name: str) -> None:
    await _on_server(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def run_alembic(url: URL, action: Callable[..., object], *args: object) -> None:
    """Run an Alembic command in-process on a connection handed in through `attributes`."""

    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        action(config, *args)

    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run)
    finally:
        await engine.dispose()


async def upgrade(url: URL, revision: str = "head") -> None:
    await run_alembic(url, command.upgrade, revision)


async def downgrade(url: URL, revision: str) -> None:
    await run_alembic(url, command.downgrade, revision)


async def fetch_all(url: URL, sql: str, **params: object) -> list[tuple[object, ...]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(text(sql), params)
            return [tuple(row) for row in result]
    finally:
        await engine.dispose()


async def execute(url: URL, *statements: str) -> None:
    """Run statements in one committed transaction."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


async def table_names(url: URL) -> set[str]:
    rows = await fetch_all(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {str(row[0]) for row in rows}


async def current_revisions(url: URL) -> set[str]:
    if "alembic_version" not in await table_names(url):
        return set()
    return {str(row[0]) for row in await fetch_all(url, "SELECT version_num FROM alembic_version")}


def alembic_env(url: URL, **extra: str) -> dict[str, str]:
    """Environment for an `alembic` subprocess aimed at `url`."""
    env = {**os.environ, "DATABASE_URL": sync_url(url), **extra}
    env.pop("TEST_DATABASE_URL", None)
    return env


def write_ini(directory: Path, *version_dirs: Path) -> Path:
    """The project's alembic.ini plus extra (test-only) version locations."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ALEMBIC_INI)
    locations = (SCRIPT_LOCATION / "versions", *version_dirs)
    parser["alembic"]["script_location"] = str(SCRIPT_LOCATION)
    parser["alembic"]["path_separator"] = "newline"
    parser["alembic"]["version_locations"] = "\n".join(str(p) for p in locations)
    ini = directory / "alembic.ini"
    with ini.open("w") as out:
        parser.write(out)
    return ini
