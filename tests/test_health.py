from __future__ import annotations

from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL

from backend.db.migrations import SCRIPT_LOCATION, head_revisions
from backend.health import assess
from tests.support import db
from tests.support.server import serving

HEAD = list(head_revisions())


async def test_healthz_needs_no_database() -> None:
    unreachable = URL.create("postgresql+asyncpg", host="127.0.0.1", port=1, database="x")
    async with serving(unreachable) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_at_head(migrated_db: URL) -> None:
    async with serving(migrated_db) as client:
        response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"
    assert response.json()["current"] == HEAD


async def test_not_ready_behind_head(migrated_db: URL) -> None:
    # Back to the first revision: defined whatever the history (a merge head has no single -1).
    first = ScriptDirectory(str(SCRIPT_LOCATION)).get_bases()[0]
    await db.downgrade(migrated_db, first)
    behind = sorted(await db.current_revisions(migrated_db))
    async with serving(migrated_db) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["current"] == behind
    assert body["head"] == HEAD
    assert "behind head" in body["reason"]


async def test_not_ready_on_a_database_never_migrated(empty_db: URL) -> None:
    async with serving(empty_db) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert "no alembic_version table" in response.json()["reason"]


async def test_not_ready_when_the_database_is_unreachable() -> None:
    unreachable = URL.create("postgresql+asyncpg", host="127.0.0.1", port=1, database="x")
    async with serving(unreachable) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["reason"].startswith("database unreachable")


async def test_ready_when_a_newer_release_already_migrated(migrated_db: URL) -> None:
    # Rolling update: the new release's init container moved the schema past this code's head.
    await db.execute(migrated_db, "UPDATE alembic_version SET version_num = 'f00dfacef00d'")
    async with serving(migrated_db) as client:
        response = await client.get("/readyz")
    assert response.status_code == 200
    assert "ahead" in response.json()["reason"]


async def test_shutdown_closes_every_connection(migrated_db: URL) -> None:
    async with serving(migrated_db) as client:
        assert (await client.get("/readyz")).status_code == 200
        during = await db.fetch_all(
            migrated_db,
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
    after = await db.fetch_all(
        migrated_db,
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    # The probe's connection, and the in-process ingestion worker's.
    assert int(str(during[0][0])) >= 1
    assert after == [(0,)]


def test_two_heads_say_merge_not_upgrade() -> None:
    """Code with two heads (two branches each added a revision): the fix is a merge revision."""
    readiness = assess(["base0"], ["head1", "head2"], frozenset({"base0", "head1", "head2"}))

    assert readiness.status == "not ready"
    assert readiness.reason is not None
    assert "alembic merge heads" in readiness.reason
    assert "2 migration heads (head1, head2)" in readiness.reason
