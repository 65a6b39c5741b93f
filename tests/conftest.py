from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from backend.core.state import app_state
from backend.db.discovery import import_models
from backend.db.migrations import head_revisions
from backend.db.session import Database
from backend.main import create_app
from tests.support import db
from tests.support.s3 import S3Server, s3_server
from tests.support.settings import configured

import_models()


@pytest.fixture(scope="session")
def server() -> URL:
    return db.server_url()


@pytest.fixture(scope="session")
async def template_db(server: URL) -> AsyncIterator[URL]:
    """A database migrated once by the real `alembic upgrade head`; others are cloned from it.

    With two heads `upgrade head` refuses: what needs the schema is skipped, and one test
    (`test_exactly_one_head`) fails saying to merge them, instead of every test erroring.
    """
    heads = head_revisions()
    if len(heads) > 1:
        pytest.skip(f"two heads {list(heads)}: see test_exactly_one_head (`alembic merge heads`)")
    url = await db.create_database(server)
    await db.upgrade(url)
    yield url
    await db.drop_database(server, str(url.database))


@pytest.fixture(scope="session")
async def schema_in_sync(template_db: URL) -> None:
    """Skip what needs the migrated schema when the models have drifted from the migrations.

    A model column without a revision would otherwise fail every API test with "column does not
    exist"; instead `test_models_match_migrations` fails, once, saying which revision to write.
    """
    if await db.schema_drift(template_db) is not None:
        pytest.skip("models and migrations differ: see test_models_match_migrations")


@pytest.fixture
async def empty_db(server: URL) -> AsyncIterator[URL]:
    url = await db.create_database(server)
    yield url
    await db.drop_database(server, str(url.database))


@pytest.fixture
async def migrated_db(server: URL, template_db: URL, schema_in_sync: None) -> AsyncIterator[URL]:
    """A fresh database at head of its own (for tests that change schema or commit)."""
    url = await db.create_database(server, template=str(template_db.database))
    yield url
    await db.drop_database(server, str(url.database))


@pytest.fixture(scope="session")
async def app_db(server: URL, template_db: URL, schema_in_sync: None) -> AsyncIterator[URL]:
    """One migrated database shared by the API tests; each test's writes are rolled back."""
    url = await db.create_database(server, template=str(template_db.database))
    yield url
    await db.drop_database(server, str(url.database))


@pytest.fixture(scope="session")
async def app_engine(app_db: URL) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(app_db)
    yield engine
    await engine.dispose()


@pytest.fixture
async def connection(app_engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with app_engine.connect() as conn:
        transaction = await conn.begin()
        yield conn
        await transaction.rollback()


@pytest.fixture
def sessionmaker(connection: AsyncConnection) -> async_sessionmaker[AsyncSession]:
    """Sessions on the test's transaction: their commits only release savepoints."""
    return async_sessionmaker(
        bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
    )


@pytest.fixture
async def session(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    async with sessionmaker() as session:
        yield session


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One S3-compatible server for the session (`rclone serve s3` on loopback); each test keeps
    to its own key prefix."""
    with s3_server(tmp_path_factory.mktemp("s3") / "data") as server:
        yield server


@pytest.fixture
def app_settings() -> dict[str, object]:
    """Settings a test folder gives every test's app (a module's conftest adds its own)."""
    return {}


@pytest.fixture
async def app(
    request: pytest.FixtureRequest,
    app_db: URL,
    sessionmaker: async_sessionmaker[AsyncSession],
    app_settings: dict[str, object],
) -> AsyncIterator[FastAPI]:
    """The real app; its request sessions (the real dependency) run on the test's transaction.

    `@pytest.mark.settings(NAME=value, ...)` on a test changes its settings.
    """
    marker = request.node.get_closest_marker("settings")
    settings = configured(
        **{
            "database_url": db.sync_url(app_db),
            # No background work: its own connections could not see the test's transaction.
            "background_in_process": False,
            **app_settings,
            **(marker.kwargs if marker else {}),
        }
    )
    application = create_app(*settings)
    async with application.router.lifespan_context(application):
        state = app_state(application)
        # Reads share the test's transaction too, so they see its rolled-back writes.
        engine = state.get(Database).engine
        database = Database(engine, sessionmaker, sessionmaker)
        state.provide(Database, database)
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http
