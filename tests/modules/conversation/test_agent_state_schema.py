"""`/readyz` while LangGraph's checkpointer tables are behind what the installed library
expects (a LangGraph upgrade deployed without the revision that applies its migrations)."""

from __future__ import annotations

from langgraph.checkpoint.postgres.base import MIGRATIONS
from sqlalchemy.engine import URL

from tests.support import db
from tests.support.server import serving


async def test_not_ready_while_the_checkpointer_schema_is_behind(migrated_db: URL) -> None:
    async with serving(migrated_db) as client:
        assert (await client.get("/readyz")).status_code == 200
        latest = len(MIGRATIONS) - 1
        await db.execute(migrated_db, f"DELETE FROM checkpoint_migrations WHERE v = {latest}")
        response = await client.get("/readyz")
    assert response.status_code == 503
    reason = response.json()["reason"]
    assert f"schema is at version {latest - 1}, the installed library expects {latest}" in reason
    assert "alembic upgrade head" in reason
