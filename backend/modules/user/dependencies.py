from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI
from fastapi.security import OAuth2PasswordBearer

from backend.core.errors import raises
from backend.core.security import read_access_token, set_hash_concurrency
from backend.core.state import app_state
from backend.db.session import ReadSessionDep, SessionDep, release_connection
from backend.modules.user import service
from backend.modules.user.exceptions import InactiveUser, NotAuthenticated, NotSuperuser
from backend.modules.user.models import User
from backend.modules.user.settings import UserSettings, UserSettingsDep


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The module's start-up: how many password hashes may run at once."""
    set_hash_concurrency(app_state(app).get(UserSettings).password_hash_concurrency)
    yield


# auto_error=False: a missing token goes through our error (401 {"detail": ...}) like a bad one.
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


@raises(NotAuthenticated, InactiveUser)
async def current_user(
    settings: UserSettingsDep,
    session: ReadSessionDep,
    token: Annotated[str | None, Depends(oauth2_scheme)],
) -> User:
    """The active user the bearer token names; 401 for a missing, bad or expired token."""
    if not token:
        raise NotAuthenticated()
    claims = read_access_token(token, key=settings.jwt_key)
    user = await service.get(session, claims[0]) if claims else None
    # An older version: the password changed, or the account was disabled, since it was issued.
    if user is None or claims is None or claims[1] != user.token_version:
        raise NotAuthenticated()
    if not user.is_active:
        raise InactiveUser()
    # The connection goes back to the pool now: a handler that writes takes its own, and one
    # that streams a body holds none.
    await release_connection(session)
    return user


CurrentUser = Annotated[User, Depends(current_user)]


async def current_user_for_update(user: CurrentUser, session: SessionDep) -> User:
    """The authenticated user, in the request's write session (for handlers that change it)."""
    return await session.merge(user, load=False)


CurrentUserForUpdate = Annotated[User, Depends(current_user_for_update)]


@raises(NotSuperuser)
async def current_superuser(user: CurrentUser) -> User:
    if not user.is_superuser:
        raise NotSuperuser()
    return user


CurrentSuperuser = Annotated[User, Depends(current_superuser)]
