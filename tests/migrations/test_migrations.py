"""The migration history itself: up, down, stairway, drift, heads, tables Alembic must not own."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.script import Script, ScriptDirectory
from sqlalchemy.engine import URL

from backend.db.migrations import SCRIPT_LOCATION, head_revisions
from tests.support import db

SCRIPTS = ScriptDirectory(str(SCRIPT_LOCATION))
# Base to head, in the order an upgrade applies them.
REVISIONS = list(reversed(list(SCRIPTS.walk_revisions())))


def test_exactly_one_head() -> None:
    heads = SCRIPTS.get_heads()
    assert len(heads) == 1, f"multiple heads {heads}: run `alembic merge heads`"
    assert head_revisions() == tuple(heads)


async def test_upgrade_from_empty_then_downgrade_to_base(empty_db: URL) -> None:
    await db.upgrade(empty_db)

    assert await db.current_revisions(empty_db) == set(SCRIPTS.get_heads())
    assert {"alembic_version", "users"} <= await db.table_names(empty_db)
    extensions = await db.fetch_all(empty_db, "SELECT extname FROM pg_extension")
    assert ("vector",) in extensions

    await db.downgrade(empty_db, "base")

    assert await db.table_names(empty_db) == {"alembic_version"}
    assert await db.current_revisions(empty_db) == set()


def parents(revision: Script) -> tuple[str, ...]:
    return tuple(revision._versioned_down_revisions)


@pytest.mark.parametrize("revision", REVISIONS, ids=lambda r: r.revision)
async def test_stairway(empty_db: URL, revision: Script) -> None:
    """Each revision upgrades, downgrades to its parents, and upgrades again.

    A merge revision's parents are all applied first (the database then has one row per branch
    in alembic_version); its downgrade, to any one parent, leaves both branches applied.
    """
    for parent in parents(revision):
        await db.upgrade(empty_db, parent)
    before = await db.table_names(empty_db)

    await db.upgrade(empty_db, revision.revision)
    await db.downgrade(empty_db, parents(revision)[0] if parents(revision) else "base")
    assert await db.table_names(empty_db) == before | {"alembic_version"}
    assert await db.current_revisions(empty_db) == set(parents(revision))
    await db.upgrade(empty_db, revision.revision)

    assert await db.current_revisions(empty_db) == {revision.revision}


async def test_models_match_migrations(template_db: URL) -> None:
    """`alembic check`: autogenerate against the migrated database finds nothing to do.

    When it does, this is the one test that fails; the tests that need the schema are skipped.
    """
    drift = await db.schema_drift(template_db)
    assert drift is None, drift


async def test_drift_is_reported(migrated_db: URL) -> None:
    """The check above can fail: a table the database has and the models lack is drift."""
    await db.execute(migrated_db, "CREATE TABLE template_test_drift (id integer PRIMARY KEY)")

    drift = await db.schema_drift(migrated_db)

    assert drift is not None
    assert "template_test_drift" in drift
    assert "alembic revision --autogenerate -m" in drift


async def test_checkpoint_tables_are_not_alembics(migrated_db: URL) -> None:
    """LangGraph's tables: the checkpointer's are created by a revision (and dropped by its
    downgrade); any other `checkpoint*` table and the store's are another tool's: no drift, no
    drop, and they survive a downgrade; a team's table named like the store's is Alembic's."""
    checkpointer = {"checkpoints", "checkpoint_blobs", "checkpoint_writes", "checkpoint_migrations"}
    assert checkpointer <= await db.table_names(migrated_db)
    await db.execute(
        migrated_db,
        "CREATE TABLE checkpoint_extra (thread_id text PRIMARY KEY, blob bytea)",
        "CREATE TABLE store (prefix text, key text, PRIMARY KEY (prefix, key))",
        "CREATE TABLE store_vectors (prefix text, key text, PRIMARY KEY (prefix, key))",
        "CREATE TABLE store_migrations (v integer PRIMARY KEY)",
        "CREATE TABLE vector_migrations (v integer PRIMARY KEY)",
    )

    await db.run_alembic(migrated_db, command.check)
    await db.execute(migrated_db, "CREATE TABLE store_items (id integer PRIMARY KEY)")
    drift = await db.schema_drift(migrated_db)
    assert drift is not None
    assert "store_items" in drift
    assert not any(table in drift for table in ("'store'", "store_vectors", "checkpoint"))
    await db.execute(migrated_db, "DROP TABLE store_items")

    await db.downgrade(migrated_db, "base")
    others = {"checkpoint_extra", "store", "store_vectors", "store_migrations", "vector_migrations"}
    assert await db.table_names(migrated_db) == {"alembic_version", *others}
