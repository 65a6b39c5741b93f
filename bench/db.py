"""The benchmark's databases: made fresh on the bench server, migrated, dropped afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy.engine import URL

from backend.core.config import PROJECT_ROOT


def dsn(url: URL) -> str:
    """The URL as asyncpg and libpq take it (password included)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def _on_server(server: URL, *statements: str) -> None:
    connection = await asyncpg.connect(dsn(server))
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def create_database(server: URL, name: str) -> URL:
    """An empty database `name`, replacing one a previous (interrupted) run left."""
    await _on_server(
        server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"'
    )
    return server.set(database=name)


async def drop_database(server: URL, name: str) -> None:
    await _on_server(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def scratch_database(server: URL, name: str) -> AsyncIterator[URL]:
    url = await create_database(server, name)
    try:
        yield url
    finally:
        await drop_database(server, name)


def alembic_upgrade(url: URL) -> float:
    """`alembic upgrade head` as its own process, as an init container runs it; wall seconds."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "DATABASE_URL": dsn(url)},
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started
