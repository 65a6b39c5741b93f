from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.security import OAuth2PasswordBearer

from backend.core.errors import Unavailable, raises
from backend.core.security import read_access_token, set_hash_concurrency
from backend.core.state import app_state, provided
from backend.db.session import SessionDep, read_session
from backend.modules.user import service
from backend.modules.user.exceptions import InactiveUser, NotAuthenticated, NotSuperuser
from backend.modules.user.hooks import AccountHooks
from backend.modules.user.models import User
from backend.modules.user.principals import PrincipalCache
from backend.modules.user.settings import UserSettings


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The module's start-up: how many password hashes may run at once; the principal cache;
    the hooks that modules above add for an account's deletion."""
    state = app_state(app)
    settings = state.get(UserSettings)
    set_hash_concurrency(settings.password_hash_concurrency)
    state.provide(PrincipalCache, PrincipalCache(settings.auth_cache_seconds))
    state.provide(AccountHooks, AccountHooks())
    yield
    state.remove(AccountHooks)
    state.remove(PrincipalCache)


AccountHooksDep = Annotated[AccountHooks, Depends(provided(AccountHooks))]


# auto_error=False: a missing token goes through our error (401 {"detail": ...}) like a bad one.
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


@raises(NotAuthenticated, InactiveUser, Unavailable)
async def current_user(
    request: Request, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> User:
    """The active user the bearer token names; 401 for a missing, bad or expired token.

    Every request passes here, so it asks FastAPI for nothing it can look up itself, and opens
    a session only when the user is not in the principal cache (`AUTH_CACHE_SECONDS`).
    """
    if not token:
        raise NotAuthenticated()
    state = app_state(request.app)
    principals = state.get(PrincipalCache)
    claims = principals.claims(token)
    if claims is None:
        claims = read_access_token(token, key=state.get(UserSettings).jwt_key)
        if claims is None:
            raise NotAuthenticated()
        principals.put_claims(token, claims)
    user = principals.get(claims.user_id)
    if user is None:
        generation = principals.generation(claims.user_id)
        # Closed before the handler runs: a handler that writes takes its own connection, and
        # one that streams a body holds none.
        async with read_session(request) as session:
            user = await service.get(session, claims.user_id)
        if user is not None:
            principals.put(user, generation)
    # An older version: the password changed, or the account was disabled, since it was issued.
    if user is None or claims.version != user.token_version:
        raise NotAuthenticated()
    if not user.is_active:
        raise InactiveUser()
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
