from __future__ import annotations

import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from fastapi.security import OAuth2PasswordRequestForm

from backend.core.errors import error_responses
from backend.core.pagination import PageDep
from backend.core.security import create_access_token
from backend.db.session import ReadSessionDep, SessionDep, independent_session
from backend.modules.user import service
from backend.modules.user.dependencies import (
    AccountHooksDep,
    CurrentSuperuser,
    CurrentUser,
    CurrentUserForUpdate,
    lifespan,
)
from backend.modules.user.exceptions import (
    EmailTaken,
    InactiveUser,
    InvalidCredentials,
    TooManyAttempts,
    UsernameTaken,
    UserNotFound,
    WrongPassword,
)
from backend.modules.user.models import User
from backend.modules.user.schemas import (
    PasswordChange,
    Token,
    UserAdminUpdate,
    UserCreate,
    UserPage,
    UserRead,
    UserUpdate,
)
from backend.modules.user.settings import UserSettingsDep

logger = logging.getLogger(__name__)
auth = APIRouter(prefix="/auth", tags=["auth"])
users = APIRouter(prefix="/users", tags=["users"])


@auth.post(
    "/register",
    response_model=UserRead,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(EmailTaken, UsernameTaken),
)
async def register(session: SessionDep, data: UserCreate) -> UserRead:
    """Create an account. The email is stored lower-case; 409 if email or username is taken."""
    user = await service.create(session, data=data)
    return UserRead.model_validate(user)


@auth.post(
    "/token",
    response_model=Token,
    status_code=status.HTTP_200_OK,
    responses=error_responses(InvalidCredentials, InactiveUser, TooManyAttempts),
)
async def token(
    request: Request,
    settings: UserSettingsDep,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
) -> Token:
    """OAuth2 password flow: `username` may be the email or the username.

    Failed logins are counted per account and per client address (LOGIN_MAX_FAILURES within
    LOGIN_FAILURE_WINDOW seconds); past the limit the answer is 429 with Retry-After.
    """
    # Its own transaction, committed even when the login fails: a failure must count.
    async with independent_session(request) as session:
        try:
            user = await service.log_in(
                session,
                login=form.username,
                password=form.password,
                address=request.client.host if request.client else None,
                settings=settings,
            )
            failure: InvalidCredentials | None = None
        except InvalidCredentials as exc:
            failure = exc
    if failure is not None:
        # Neither the login nor the password: the request id ties it to its access line.
        logger.info("login refused: invalid credentials")
        raise failure
    access = create_access_token(
        user.id,
        version=user.token_version,
        key=settings.jwt_key,
        minutes=settings.access_token_minutes,
    )
    return Token(access_token=access)


@users.get("/me", response_model=UserRead, status_code=status.HTTP_200_OK)
async def read_me(user: CurrentUser) -> UserRead:
    """The authenticated user."""
    return UserRead.model_validate(user)


@users.patch(
    "/me",
    response_model=UserRead,
    status_code=status.HTTP_200_OK,
    responses=error_responses(EmailTaken, UsernameTaken),
)
async def update_me(session: SessionDep, user: CurrentUserForUpdate, data: UserUpdate) -> UserRead:
    """Change email and/or username; 409 if taken by someone else."""
    return UserRead.model_validate(await service.update(session, user=user, data=data))


@users.post(
    "/me/password",
    status_code=status.HTTP_204_NO_CONTENT,
    response_model=None,
    responses=error_responses(WrongPassword),
)
async def change_password(
    session: SessionDep, user: CurrentUserForUpdate, data: PasswordChange
) -> None:
    """Replace the password; the current one must be given. Every earlier token stops working:
    log in again."""
    await service.change_password(session, user=user, data=data)


async def _delete_account(session: SessionDep, user: User, hooks: AccountHooksDep) -> None:
    # Rows cascade; the modules above remove what lives elsewhere (the file module: blobs).
    await hooks.deleting(session, user)
    await service.delete(session, user=user)


@users.delete("/me", status_code=status.HTTP_204_NO_CONTENT, response_model=None)
async def delete_me(
    session: SessionDep, user: CurrentUserForUpdate, hooks: AccountHooksDep
) -> None:
    """Delete your account with its files (their contents too) and knowledge bases."""
    await _delete_account(session, user, hooks)


@users.get("", response_model=UserPage, status_code=status.HTTP_200_OK)
async def list_users(session: ReadSessionDep, _: CurrentSuperuser, page: PageDep) -> UserPage:
    """All users, oldest first (superusers only)."""
    return UserPage.of(await service.list(session, page=page), page)


async def _other_user(session: SessionDep, user_id: uuid.UUID) -> User:
    user = await service.get(session, user_id)
    if user is None:
        raise UserNotFound()
    return user


@users.patch(
    "/{user_id}",
    response_model=UserRead,
    status_code=status.HTTP_200_OK,
    responses=error_responses(UserNotFound),
)
async def administer(
    session: SessionDep, _: CurrentSuperuser, user_id: uuid.UUID, data: UserAdminUpdate
) -> UserRead:
    """Disable or re-enable an account, or change its superuser flag (superusers only).
    Disabling ends its tokens at once."""
    user = await _other_user(session, user_id)
    return UserRead.model_validate(await service.administer(session, user=user, data=data))


@users.delete(
    "/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_model=None,
    responses=error_responses(UserNotFound),
)
async def delete_user(
    session: SessionDep, _: CurrentSuperuser, user_id: uuid.UUID, hooks: AccountHooksDep
) -> None:
    """Delete an account with its files and knowledge bases (superusers only)."""
    await _delete_account(session, await _other_user(session, user_id), hooks)


# The module's one router (mounted by `main.py`), with its start-up.
router = APIRouter(lifespan=lifespan)
router.include_router(auth)
router.include_router(users)
