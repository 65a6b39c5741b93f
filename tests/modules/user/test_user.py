from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import jwt
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.state import app_state
from backend.modules.user.models import User
from backend.modules.user.settings import UserSettings
from tests.modules.user.factories import PASSWORD, create_user, login, user_with_token

REGISTER = "/api/v1/auth/register"
TOKEN = "/api/v1/auth/token"
ME = "/api/v1/users/me"


async def test_register_login_and_read_me(client: httpx.AsyncClient, session: AsyncSession) -> None:
    response = await client.post(
        REGISTER, json={"email": "Ada@Example.com", "username": "ada", "password": PASSWORD}
    )
    assert response.status_code == 201
    body = response.json()
    assert body["email"] == "ada@example.com"
    assert "password" not in str(body)
    assert "hashed" not in str(body)

    stored = await session.scalar(select(User).where(User.username == "ada"))
    assert stored is not None
    assert stored.hashed_password.startswith("$argon2")
    assert stored.email_as_registered == "Ada@Example.com"

    for login_name in ("ada", "ADA@example.com"):
        headers = await login(client, login_name)
        me = await client.get(ME, headers=headers)
        assert me.status_code == 200
        assert me.json()["id"] == body["id"]


async def test_duplicate_email_or_username_is_409(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    await create_user(session, email="taken@example.com", username="taken")
    same_email = await client.post(
        REGISTER, json={"email": "TAKEN@example.com", "username": "other", "password": PASSWORD}
    )
    same_name = await client.post(
        REGISTER, json={"email": "new@example.com", "username": "taken", "password": PASSWORD}
    )
    assert same_email.status_code == 409
    assert "email" in same_email.json()["detail"]
    assert same_name.status_code == 409
    assert "username" in same_name.json()["detail"]


async def test_wrong_credentials_give_one_answer(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    await create_user(session, username="carol")
    wrong_password = await client.post(TOKEN, data={"username": "carol", "password": "nope-nope"})
    no_such_user = await client.post(TOKEN, data={"username": "nobody", "password": PASSWORD})
    assert wrong_password.status_code == no_such_user.status_code == 401
    assert (
        wrong_password.json()
        == no_such_user.json()
        == {"detail": "Incorrect username or password", "code": "invalid_credentials"}
    )


async def test_inactive_users_cannot_log_in_or_use_a_token(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    user, headers = await user_with_token(client, session)
    await session.execute(update(User).where(User.id == user.id).values(is_active=False))
    await session.commit()

    assert (await client.get(ME, headers=headers)).status_code == 403
    refused = await client.post(TOKEN, data={"username": user.username, "password": PASSWORD})
    assert refused.status_code == 403


async def test_bad_missing_forged_and_expired_tokens_are_401(
    client: httpx.AsyncClient, session: AsyncSession, app: object
) -> None:
    user = await create_user(session)
    from fastapi import FastAPI

    assert isinstance(app, FastAPI)
    key = app_state(app).get(UserSettings).jwt_key
    expired = jwt.encode(
        {"sub": str(user.id), "exp": datetime.now(UTC) - timedelta(minutes=1)}, key, "HS256"
    )
    forged = jwt.encode(
        {"sub": str(user.id), "exp": datetime.now(UTC) + timedelta(minutes=5)}, "x" * 40, "HS256"
    )
    for headers in (
        {},
        {"Authorization": "Bearer not-a-jwt"},
        {"Authorization": f"Bearer {expired}"},
        {"Authorization": f"Bearer {forged}"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ):
        response = await client.get(ME, headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["detail"].startswith("Not authenticated")


async def test_update_me_and_change_password(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    await create_user(session, username="someone_else", email="else@example.com")
    _user, headers = await user_with_token(client, session)

    clash = await client.patch(ME, headers=headers, json={"username": "someone_else"})
    assert clash.status_code == 409
    renamed = await client.patch(ME, headers=headers, json={"username": "renamed_user"})
    assert renamed.status_code == 200
    assert renamed.json()["username"] == "renamed_user"

    wrong = await client.post(
        f"{ME}/password",
        headers=headers,
        json={"current_password": "not-it-at-all", "new_password": "a new password"},
    )
    assert wrong.status_code == 400
    changed = await client.post(
        f"{ME}/password",
        headers=headers,
        json={"current_password": PASSWORD, "new_password": "a new password"},
    )
    assert changed.status_code == 204
    await login(client, "renamed_user", "a new password")
    old = await client.post(TOKEN, data={"username": "renamed_user", "password": PASSWORD})
    assert old.status_code == 401


async def test_listing_users_needs_a_superuser(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    _, plain = await user_with_token(client, session)
    _, admin = await user_with_token(client, session, is_superuser=True)

    assert (await client.get("/api/v1/users", headers=plain)).status_code == 403
    listed = await client.get("/api/v1/users", headers=admin, params={"limit": 1})
    assert listed.status_code == 200
    assert len(listed.json()["items"]) == 1
    assert listed.json()["has_more"] is True


async def test_bad_input_is_a_clear_4xx(client: httpx.AsyncClient) -> None:
    cases = [
        (b'{"email": "x@example.com", "username": ', 422),  # malformed JSON
        (b'{"email": "not-an-email", "username": "abc", "password": "longenough"}', 422),
        (b'{"email": "a@example.com", "username": "ab", "password": "longenough"}', 422),
        (b'{"email": "a@example.com", "username": "abc", "password": "short"}', 422),
        (b'{"email": 5, "username": ["x"], "password": null}', 422),
        # Found by the schema fuzzer: a domain that is no domain name.
        (b'{"email": "a@example.co*", "username": "abc", "password": "longenough"}', 422),
        (b'{"email": "a@1.2.3.4", "username": "abc", "password": "longenough"}', 422),
    ]
    for body, expected in cases:
        response = await client.post(
            REGISTER, content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == expected, body
        assert isinstance(response.json()["detail"], str)

    huge = b'{"email": "' + b"a" * 3_000_000 + b'"}'
    too_big = await client.post(
        REGISTER, content=huge, headers={"content-type": "application/json"}
    )
    assert too_big.status_code == 413


async def test_an_admin_change_takes_booleans_only(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    """Found by the schema fuzzer: `is_superuser: 0` was read as false."""
    target, _ = await user_with_token(client, session)
    _, admin = await user_with_token(client, session, is_superuser=True)
    url = f"/api/v1/users/{target.id}"

    for value in (0, 1, "yes", "false"):
        response = await client.patch(url, headers=admin, json={"is_superuser": value})
        assert response.status_code == 422, (value, response.text)
    assert (await client.patch(url, headers=admin, json={"is_superuser": True})).status_code == 200
