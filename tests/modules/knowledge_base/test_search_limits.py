"""One user's searches against a real server: bounded in number and in time, so they cannot
take the database pool from everyone else."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine

from tests.modules.user.factories import account
from tests.support import db
from tests.support.server import uvicorn_server

pytestmark = [pytest.mark.slow]

API = "/api/v1"


async def test_one_users_searches_are_bounded_in_number_and_time(
    migrated_db: URL, tmp_path: Path
) -> None:
    """A user's searches wait on a lock (as a slow one would run): past
    SEARCH_CONCURRENCY_PER_USER the next answers 429 at once, and each running one is stopped
    after SEARCH_TIMEOUT_SECONDS with a 503 that says so."""
    limits = {"SEARCH_CONCURRENCY_PER_USER": "2", "SEARCH_TIMEOUT_SECONDS": "1"}
    engine = create_async_engine(migrated_db)
    async with (
        uvicorn_server(migrated_db, tmp_path / "f", **limits) as base,
        httpx.AsyncClient(base_url=f"{base}{API}", timeout=30) as client,
    ):
        auth = await account(client, "searcher")
        kb = (await client.post("/knowledge-bases", headers=auth, json={"name": "kb"})).json()
        search = f"/knowledge-bases/{kb['id']}/search"
        body = {"query": "words", "mode": "keyword"}
        try:
            async with engine.connect() as blocker:
                await blocker.execute(text("LOCK TABLE chunks IN ACCESS EXCLUSIVE MODE"))
                running = [
                    asyncio.create_task(client.post(search, headers=auth, json=body))
                    for _ in range(2)
                ]
                waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                async with asyncio.timeout(20):
                    while int(str((await db.fetch_all(migrated_db, waiting))[0][0])) < 2:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                third = await client.post(search, headers=auth, json=body)
                held = await asyncio.gather(*running)
                await blocker.rollback()
        finally:
            await engine.dispose()
        after = await client.post(search, headers=auth, json=body)

    assert third.status_code == 429
    assert "SEARCH_CONCURRENCY_PER_USER" in third.json()["detail"]
    assert [r.status_code for r in held] == [503, 503]
    assert "SEARCH_TIMEOUT_SECONDS" in held[0].json()["detail"]
    assert after.status_code == 200
