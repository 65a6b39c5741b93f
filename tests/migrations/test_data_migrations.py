"""Data migrations change existing rows, and give them back on the way down."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import URL

from tests.support import db

EMAILS_LOWERED = "c7a9e1f3b5d2"


async def insert_user(url: URL, email: str, username: str) -> None:
    await db.execute(
        url,
        "INSERT INTO users (id, email, username, hashed_password) "
        f"VALUES (gen_random_uuid(), '{email}', '{username}', 'x')",
    )


async def test_emails_are_lowered_and_restored(empty_db: URL) -> None:
    await db.upgrade(empty_db, f"{EMAILS_LOWERED}-1")
    await insert_user(empty_db, "Ada.Lovelace@Example.COM", "ada")
    await insert_user(empty_db, "grace@example.com", "grace")

    await db.upgrade(empty_db, EMAILS_LOWERED)
    rows = await db.fetch_all(
        empty_db, "SELECT username, email, email_as_registered FROM users ORDER BY username"
    )
    assert rows == [
        ("ada", "ada.lovelace@example.com", "Ada.Lovelace@Example.COM"),
        ("grace", "grace@example.com", "grace@example.com"),
    ]

    await db.downgrade(empty_db, "-1")
    rows = await db.fetch_all(empty_db, "SELECT username, email FROM users ORDER BY username")
    assert rows == [("ada", "Ada.Lovelace@Example.COM"), ("grace", "grace@example.com")]


async def test_addresses_that_differ_only_in_case_stop_the_migration(empty_db: URL) -> None:
    await db.upgrade(empty_db, f"{EMAILS_LOWERED}-1")
    await insert_user(empty_db, "Bob@example.com", "bob1")
    await insert_user(empty_db, "bob@example.com", "bob2")

    with pytest.raises(Exception, match="share an address apart from case"):
        await db.upgrade(empty_db, EMAILS_LOWERED)

    assert await db.current_revisions(empty_db) != {EMAILS_LOWERED}
    rows = await db.fetch_all(empty_db, "SELECT email FROM users ORDER BY username")
    assert rows == [("Bob@example.com",), ("bob@example.com",)]
