from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Sequence

from sqlalchemy import bindparam, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.pagination import PageParams, paged
from backend.core.schemas import is_storable
from backend.core.security import hash_password, verify_password
from backend.db.session import release_connection
from backend.modules.user import throttle
from backend.modules.user.exceptions import (
    EmailTaken,
    InactiveUser,
    InvalidCredentials,
    UsernameTaken,
    WrongPassword,
)
from backend.modules.user.models import User
from backend.modules.user.schemas import PasswordChange, UserAdminUpdate, UserCreate, UserUpdate
from backend.modules.user.settings import UserSettings


def normalise_email(email: str) -> str:
    return unicodedata.normalize("NFKC", email).strip().lower()


async def _check_free(
    session: AsyncSession, *, email: str | None, username: str | None, exclude: uuid.UUID | None
) -> None:
    for column, value, error in (
        (User.email, email, EmailTaken),
        (User.username, username, UsernameTaken),
    ):
        if value is None:
            continue
        condition = column == value
        if exclude is not None:
            condition &= User.id != exclude
        if await session.scalar(select(exists().where(condition))):
            raise error()


async def create(session: AsyncSession, *, data: UserCreate, is_superuser: bool = False) -> User:
    email = normalise_email(data.email)
    # Hashed before the first query: the request holds no connection while argon2 runs.
    hashed = await hash_password(data.password)
    await _check_free(session, email=email, username=data.username, exclude=None)
    user = User(
        email=email,
        email_as_registered=data.email.strip(),
        username=data.username,
        hashed_password=hashed,
        is_superuser=is_superuser,
    )
    session.add(user)
    await session.flush()
    return user


# Built once with bind parameters (see backend/core/pagination.py): cheaper than per request.
BY_ID = select(User).where(User.id == bindparam("user_id"))
OLDEST_FIRST = paged(select(User).order_by(User.created_at, User.id))


async def get(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    """The user, read with one statement built once (what authentication runs on a cache miss)."""
    return await session.scalar(BY_ID, {"user_id": user_id})


def normalise_login(login: str) -> str:
    """A login as it is looked up: NFKC, trimmed; "" for one no account can have (NUL)."""
    return unicodedata.normalize("NFKC", login).strip() if is_storable(login) else ""


async def find_by_login(session: AsyncSession, login: str) -> User | None:
    """The user whose email (a login with `@`) or username is `login`, as normalised."""
    if not login:
        return None
    if "@" in login:
        return await session.scalar(select(User).where(User.email == normalise_email(login)))
    return await session.scalar(select(User).where(User.username == login))


async def log_in(
    session: AsyncSession, *, login: str, password: str, address: str | None, settings: UserSettings
) -> User:
    """The user whose email or username is `login` and whose password matches, throttled.

    Failed logins are counted per account and per client address (see `throttle`); the
    failure is recorded in `session` before `InvalidCredentials` is raised, so the caller
    commits it either way.
    """
    login = normalise_login(login)
    user = await find_by_login(session, login)
    keys = throttle.keys(str(user.id) if user else login.lower(), address)
    await throttle.check(session, keys=keys, max_failures=settings.login_max_failures)
    # The hash takes ~100 ms and may queue behind others: no connection is held meanwhile, or a
    # burst of logins would hold the whole pool. A login no account has costs the same.
    await release_connection(session)
    if not await verify_password(password, user.hashed_password if user else None) or not user:
        await throttle.record_failure(session, keys=keys, window=settings.login_failure_window)
        raise InvalidCredentials()
    await throttle.clear(session, key=keys[0])
    if not user.is_active:
        raise InactiveUser()
    return user


async def update(session: AsyncSession, *, user: User, data: UserUpdate) -> User:
    email = normalise_email(data.email) if data.email is not None else None
    await _check_free(session, email=email, username=data.username, exclude=user.id)
    if data.email is not None and email is not None:
        user.email = email
        user.email_as_registered = data.email.strip()
    if data.username is not None:
        user.username = data.username
    await session.flush()
    return user


async def change_password(session: AsyncSession, *, user: User, data: PasswordChange) -> None:
    if not await verify_password(data.current_password, user.hashed_password):
        raise WrongPassword()
    user.hashed_password = await hash_password(data.new_password)
    user.token_version += 1  # every token issued before the change stops working
    await session.flush()


async def administer(session: AsyncSession, *, user: User, data: UserAdminUpdate) -> User:
    """A superuser's changes to an account; disabling it also ends its tokens."""
    if data.is_active is not None and data.is_active != user.is_active:
        user.is_active = data.is_active
        user.token_version += 1
    if data.is_superuser is not None:
        user.is_superuser = data.is_superuser
    await session.flush()
    return user


async def delete(session: AsyncSession, *, user: User) -> None:
    """Delete the account; its rows elsewhere go with it (ON DELETE CASCADE)."""
    await session.delete(user)
    await session.flush()


async def list(session: AsyncSession, *, page: PageParams) -> Sequence[User]:
    return (await session.scalars(OLDEST_FIRST, page.bind())).all()
