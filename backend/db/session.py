"""The engine and session factory (one per process) and the request's session."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import ORMExecuteState, Session

from backend.core.config import Settings
from backend.core.errors import Unavailable, raises
from backend.core.state import app_state
from backend.core.tracing import Tracing
from backend.db.embedded import embedded_database_url, release_embedded_database


def database_url(settings: Settings) -> URL:
    """The asyncpg URL to connect to, starting the embedded server if none is configured."""
    if settings.database_url is not None:
        return make_url(settings.database_url)
    return make_url(embedded_database_url(settings.embedded_db_dir))


def create_engine(settings: Settings) -> AsyncEngine:
    return create_async_engine(
        database_url(settings),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        # Off by default: a ping is one more round trip on every checkout. A connection the
        # server dropped fails one request and is replaced; turn it on behind flaky networks.
        pool_pre_ping=settings.db_pool_pre_ping,
        # Waiting longer only piles requests up: fail fast with 503 and let clients retry.
        pool_timeout=settings.db_pool_timeout,
        echo=settings.db_echo,
        # In production a SQL error's message leaves out the statement's values (emails, ...),
        # so they reach no log line.
        hide_parameters=settings.environment == "production",
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: objects stay readable after the boundary commit (no lazy IO).
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def create_read_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Read sessions: autocommit, so no BEGIN and COMMIT round trips.

    Each statement still sees a consistent snapshot of its own, as it would in the default
    READ COMMITTED transaction. A write through one fails (`ReadOnlySessionError`).
    """
    return create_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"))


@dataclass(frozen=True)
class Database:
    """The process's engine and its two session factories (in the app state)."""

    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    read_sessionmaker: async_sessionmaker[AsyncSession]

    @classmethod
    def of(cls, engine: AsyncEngine) -> Database:
        return cls(engine, create_sessionmaker(engine), create_read_sessionmaker(engine))


@asynccontextmanager
async def database_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The app's own lifespan: the database is there before any module starts, and after."""
    state = app_state(app)
    settings = state.get(Settings)
    database = Database.of(create_engine(settings))
    state.provide(Database, database)
    tracing = state.find(Tracing)
    if tracing is not None:
        tracing.trace_sql(database.engine)
    try:
        yield
    finally:
        state.remove(Database)
        await database.engine.dispose()
        if settings.uses_embedded_db:
            release_embedded_database(settings.embedded_db_dir)


def database(request: Request) -> Database:
    return app_state(request.app).get(Database)


class ReadOnlySessionError(RuntimeError):
    """A write through a `ReadSessionDep`: ask for `SessionDep` where a handler writes."""


def _pending_writes(session: Session | AsyncSession) -> bool:
    return bool(session.new or session.dirty or session.deleted)


def _refuse_writes(session: Session, *_: object) -> None:
    if session.info.get("read_only") and _pending_writes(session):
        raise ReadOnlySessionError("flush through a read session: use SessionDep to write")


def _refuse_dml(state: ORMExecuteState) -> None:
    if state.session.info.get("read_only") and (
        state.is_insert or state.is_update or state.is_delete
    ):
        raise ReadOnlySessionError("INSERT/UPDATE/DELETE through a read session: use SessionDep")


event.listen(Session, "before_flush", _refuse_writes)
event.listen(Session, "do_orm_execute", _refuse_dml)
Callback = Callable[[], Awaitable[None]]
logger = logging.getLogger(__name__)


def after_commit(session: AsyncSession, callback: Callback) -> None:
    """Run `callback` once the request's transaction has committed (e.g. delete a blob)."""
    session.info.setdefault("after_commit", []).append(callback)


def after_rollback(session: AsyncSession, callback: Callback) -> None:
    """Run `callback` if the request's transaction is rolled back (e.g. drop a new blob)."""
    session.info.setdefault("after_rollback", []).append(callback)


async def _run(session: AsyncSession, key: str) -> None:
    for callback in session.info.pop(key, []):
        try:
            await callback()
        except Exception:
            # What is left behind (a blob without a row) is what the cleanup job removes.
            logger.exception("%s callback failed", key)


async def release_connection(session: AsyncSession) -> None:
    """End the request's reads so far and hand its connection back to the pool.

    For a handler about to wait on something slow (a client streaming an upload): the next
    statement takes a connection again. Only before the request has written anything.
    """
    if _pending_writes(session):
        raise RuntimeError("release_connection() after a write would commit it early")
    if session.in_transaction():
        await session.commit()


@asynccontextmanager
async def independent_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session of its own, committed at the end of the block whatever the request does.

    For state that must outlive the request's rollback (a failed login still counts). The block
    may hand the connection back midway (`release_connection`); the next statement takes one.
    """
    async with database(request).sessionmaker() as session:
        yield session
        await session.commit()


@raises(Unavailable)
async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request, committed once at the boundary, rolled back on any error."""
    async with database(request).sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            session.info.pop("after_commit", None)
            await _run(session, "after_rollback")
            raise
        session.info.pop("after_rollback", None)
        await _run(session, "after_commit")


@asynccontextmanager
async def read_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A read session for a block (autocommit, writes refused), for a dependency that may not
    need the database at all (an authentication cache hit)."""
    async with database(request).read_sessionmaker() as session:
        session.info["read_only"] = True
        yield session


@raises(Unavailable)
async def get_read_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A read session for the request: autocommit, writes refused, closed before the response.

    Its connection is taken at the first statement and can be handed back early with
    `release_connection` (the load-or-404 dependencies do, so a handler that then writes or
    streams holds one connection, or none).
    """
    async with read_session(request) as session:
        yield session


# The type a handler asks for says what it does. SessionDep: one transaction, committed at the
# boundary before the response is sent (scope="function"), so a client never sees success for a
# write that failed to commit. ReadSessionDep: no transaction at all, and no writes.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session, scope="function")]
