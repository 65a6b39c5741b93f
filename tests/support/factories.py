"""Small async factories for test data, through the API where that is what a user does."""

from __future__ import annotations

import uuid
from pathlib import Path

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


def files_in(directory: Path) -> list[Path]:
    """Every file under `directory` (blobs in a storage directory)."""
    return [path for path in directory.rglob("*") if path.is_file()]
