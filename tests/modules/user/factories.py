"""Small async factories for test data, through the API where that is what a user does."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from backend.modules.user import service as user_service
from backend.modules.user.models import User
from backend.modules.user.schemas import UserCreate

PASSWORD = "correct horse battery"


async def create_user(
    session: AsyncSession,
    *,
    email: str | None = None,
    username: str | None = None,
    password: str = PASSWORD,
    is_superuser: bool = False,
) -> User:
    name = username or f"user_{uuid.uuid4().hex[:8]}"
    data = UserCreate(email=email or f"{name}@example.com", username=name, password=password)
    user = await user_service.create(session, data=data, is_superuser=is_superuser)
    await session.commit()
    return user


async def login(client: httpx.AsyncClient, login: str, password: str = PASSWORD) -> dict[str, str]:
    response = await client.post(
        "/api/v1/auth/token", data={"username": login, "password": password}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def user_with_token(
    client: httpx.AsyncClient, session: AsyncSession, **kwargs: object
) -> tuple[User, dict[str, str]]:
    user = await create_user(session, **kwargs)  # type: ignore[arg-type]
    return user, await login(client, user.username)


async def account(client: httpx.AsyncClient, name: str) -> dict[str, str]:
    """Register `name` through the API (`client`'s base URL ends in /api/v1) and log in: the
    Authorization header."""
    user = {"email": f"{name}@example.com", "username": name, "password": PASSWORD}
    assert (await client.post("/auth/register", json=user)).status_code == 201
    token = await client.post("/auth/token", data={"username": name, "password": PASSWORD})
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


async def account_at(base: str, name: str) -> dict[str, str]:
    """`account` on the server at `base` (http://host:port)."""
    async with httpx.AsyncClient(base_url=f"{base}/api/v1") as client:
        return await account(client, name)
