"""The principal cache: most requests skip the user query, and changes apply within a bound."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import event, inspect, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from backend.core.security import AccessClaims
from backend.modules.user.models import User
from backend.modules.user.principals import PrincipalCache
from tests.modules.user.factories import PASSWORD, create_user, user_with_token

ME = "/api/v1/users/me"


@contextmanager
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_a_known_user_costs_no_query(
    client: httpx.AsyncClient, session: AsyncSession, app_engine: AsyncEngine
) -> None:
    _, auth = await user_with_token(client, session)
    assert (await client.get(ME, headers=auth)).status_code == 200
    with statements(app_engine) as seen:
        again = await client.get(ME, headers=auth)
    assert again.status_code == 200
    assert seen == []


async def _deactivate_elsewhere(session: AsyncSession, user: User) -> None:
    """What another replica (or SQL outside the app) does: this process is not told."""
    await session.execute(
        update(User).where(User.id == user.id).values(is_active=False, token_version=9)
    )
    await session.commit()


@pytest.mark.settings(auth_cache_seconds=0.5)
async def test_a_change_made_elsewhere_applies_within_the_bound(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    user, auth = await user_with_token(client, session)
    assert (await client.get(ME, headers=auth)).status_code == 200
    await _deactivate_elsewhere(session, user)

    assert (await client.get(ME, headers=auth)).status_code == 200  # the documented trade-off
    await asyncio.sleep(0.6)
    assert (await client.get(ME, headers=auth)).status_code == 401


@pytest.mark.settings(auth_cache_seconds=0)
async def test_with_the_cache_off_a_change_elsewhere_applies_at_once(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    user, auth = await user_with_token(client, session)
    assert (await client.get(ME, headers=auth)).status_code == 200
    await _deactivate_elsewhere(session, user)
    assert (await client.get(ME, headers=auth)).status_code == 401


async def test_a_profile_change_through_this_replica_shows_at_once(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    _, auth = await user_with_token(client, session)
    assert (await client.get(ME, headers=auth)).status_code == 200
    changed = await client.patch(ME, headers=auth, json={"username": "renamed_at_once"})
    assert changed.status_code == 200
    assert (await client.get(ME, headers=auth)).json()["username"] == "renamed_at_once"


def test_a_load_that_raced_a_change_is_not_kept_and_the_cache_is_bounded() -> None:
    cache = PrincipalCache(ttl=60, max_entries=2)
    users = [User(id=uuid.uuid4(), username=f"u{n}", token_version=0) for n in range(3)]
    started = cache.generation(users[0].id)
    cache.forget(users[0].id)  # the user changed while the load was in flight
    cache.put(users[0], started)
    assert cache.get(users[0].id) is None

    for user in users:
        cache.put(user, cache.generation(user.id))
    assert cache.get(users[0].id) is None  # the oldest made room
    hit = cache.get(users[2].id)
    assert hit is not None
    assert hit is not cache.get(users[2].id), "each hit is a fresh object"
    assert hit.username == "u2"


async def test_a_hit_is_a_detached_user_as_loaded_that_a_session_can_change(
    session: AsyncSession,
) -> None:
    user = await create_user(session, username="cached_one")
    cache = PrincipalCache(ttl=60)
    cache.put(user, cache.generation(user.id))
    hit = cache.get(user.id)
    assert hit is not None
    assert hit is not user
    state = inspect(hit)
    assert state.detached
    assert not state.modified
    assert (hit.id, hit.username, hit.email) == (user.id, user.username, user.email)

    session.expunge_all()
    merged = await session.merge(hit, load=False)
    merged.username = "changed_through_a_hit"
    await session.commit()
    session.expunge_all()
    stored = await session.get(User, user.id)
    assert stored is not None
    assert (stored.username, stored.email) == ("changed_through_a_hit", user.email)


def test_a_verified_token_is_kept_within_the_bound_and_never_past_its_expiry() -> None:
    cache = PrincipalCache(ttl=60, max_entries=2)
    user_id = uuid.uuid4()
    cache.put_claims("valid", AccessClaims(user_id, 0, time.time() + 600))
    cache.put_claims("expired", AccessClaims(user_id, 0, time.time() - 1))
    kept = cache.claims("valid")
    assert kept is not None
    assert (kept.user_id, kept.version) == (user_id, 0)
    assert cache.claims("expired") is None
    assert cache.claims("never seen") is None
    off = PrincipalCache(ttl=0)
    off.put_claims("valid", AccessClaims(user_id, 0, time.time() + 600))
    assert off.claims("valid") is None


async def test_a_cached_token_still_ends_with_a_password_change(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    _, auth = await user_with_token(client, session)
    assert (await client.get(ME, headers=auth)).status_code == 200  # token and user now cached
    changed = await client.post(
        f"{ME}/password",
        headers=auth,
        json={"current_password": PASSWORD, "new_password": "a-new-password-2"},
    )
    assert changed.status_code == 204, changed.text
    assert (await client.get(ME, headers=auth)).status_code == 401
