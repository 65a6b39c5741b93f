"""One commit per request at the boundary; rollback on error; commit before the response."""

from __future__ import annotations

import uuid

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from sqlalchemy import func, select, update
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.errors import Conflict
from backend.db.session import ReadOnlySessionError, ReadSessionDep, SessionDep
from backend.main import create_app
from backend.modules.user.models import User
from tests.support import db
from tests.support.settings import configured

router = APIRouter(prefix="/boundary")


def make_user(email: str) -> User:
    return User(email=email, username=uuid.uuid4().hex[:12], hashed_password="x")


@router.post("/ok", status_code=201)
async def add(session: SessionDep, email: str) -> dict[str, str]:
    session.add(make_user(email))
    return {"email": email}


@router.post("/fails-after-writing", status_code=201)
async def add_then_fail(session: SessionDep, email: str) -> dict[str, str]:
    session.add(make_user(email))
    await session.flush()
    raise Conflict("changed my mind")


@pytest.fixture
async def client_with_router(app: FastAPI, client: httpx.AsyncClient) -> httpx.AsyncClient:
    app.include_router(router)
    return client


async def count(session: AsyncSession, email: str) -> int:
    return (
        await session.execute(select(func.count()).select_from(User).where(User.email == email))
    ).scalar_one()


async def test_a_successful_request_commits(
    client_with_router: httpx.AsyncClient, session: AsyncSession
) -> None:
    response = await client_with_router.post("/boundary/ok", params={"email": "a@example.com"})
    assert response.status_code == 201
    assert await count(session, "a@example.com") == 1


async def test_a_failing_request_leaves_nothing(
    client_with_router: httpx.AsyncClient, session: AsyncSession
) -> None:
    response = await client_with_router.post(
        "/boundary/fails-after-writing", params={"email": "b@example.com"}
    )
    assert response.status_code == 409
    assert response.json() == {"detail": "changed my mind", "code": "conflict"}
    assert await count(session, "b@example.com") == 0


async def test_a_commit_that_fails_is_the_response(
    client_with_router: httpx.AsyncClient, session: AsyncSession
) -> None:
    """The unique violation surfaces only at commit: the client must not have seen a 201."""
    first = await client_with_router.post("/boundary/ok", params={"email": "c@example.com"})
    assert first.status_code == 201
    second = await client_with_router.post("/boundary/ok", params={"email": "c@example.com"})
    assert second.status_code == 409
    assert await count(session, "c@example.com") == 1


tx_router = APIRouter(prefix="/tx")


async def in_transaction(session: AsyncSession) -> dict[str, bool]:
    await session.execute(select(1))
    connection = await session.connection()
    driver = (await connection.get_raw_connection()).driver_connection
    assert driver is not None
    return {"in_transaction": driver.is_in_transaction()}


@tx_router.get("")
async def read(session: ReadSessionDep) -> dict[str, bool]:
    return await in_transaction(session)


@tx_router.post("/sneaky")
async def write_through_a_read_session(session: ReadSessionDep) -> None:
    session.add(make_user("sneaky@example.com"))
    await session.flush()


@tx_router.post("/sneaky-sql")
async def update_through_a_read_session(session: ReadSessionDep) -> None:
    await session.execute(update(User).values(is_superuser=True))


@tx_router.post("")
async def write(session: SessionDep) -> dict[str, bool]:
    return await in_transaction(session)


async def test_reads_autocommit_and_writes_run_in_a_transaction(migrated_db: URL) -> None:
    """A read session pays no BEGIN/COMMIT round trips; a write session is one transaction.

    The handler's parameter type decides (`ReadSessionDep` or `SessionDep`), not the method.
    """
    settings = configured(database_url=db.sync_url(migrated_db), background_in_process=False)
    app = create_app(*settings)
    app.include_router(tx_router)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        assert (await client.get("/tx")).json() == {"in_transaction": False}
        assert (await client.post("/tx")).json() == {"in_transaction": True}


async def test_a_write_through_a_read_session_fails_loudly(
    app: FastAPI, client: httpx.AsyncClient, session: AsyncSession
) -> None:
    app.include_router(tx_router)
    for path in ("/tx/sneaky", "/tx/sneaky-sql"):
        with pytest.raises(ReadOnlySessionError):
            await client.post(path)
    assert await count(session, "sneaky@example.com") == 0
