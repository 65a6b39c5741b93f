from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.security import OAuth2PasswordRequestForm

from backend.core.security import create_access_token
from backend.db.session import SessionDep
from backend.modules.user import service
from backend.modules.user.dependencies import CurrentSuperuser, CurrentUser
from backend.modules.user.schemas import (
    PasswordChange,
    Token,
    UserCreate,
    UserPage,
    UserRead,
    UserUpdate,
)

auth_router = APIRouter(prefix="/auth", tags=["auth"])
router = APIRouter(prefix="/users", tags=["users"])


@auth_router.post("/register", response_model=UserRead, status_code=status.HTTP_201_CREATED)
async def register(session: SessionDep, data: UserCreate) -> UserRead:
    """Create an account. The email is stored lower-case; 409 if email or username is taken."""
    user = await service.create(session, data=data)
    return UserRead.model_validate(user)


@auth_router.post("/token", response_model=Token, status_code=status.HTTP_200_OK)
async def token(
    request: Request,
    session: SessionDep,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
) -> Token:
    """OAuth2 password flow: `username` may be the email or the username."""
    user = await service.authenticate(session, login=form.username, password=form.password)
    settings = request.app.state.settings
    access = create_access_token(
        user.id, key=settings.jwt_key, minutes=settings.access_token_minutes
    )
    return Token(access_token=access)


@router.get("/me", response_model=UserRead, status_code=status.HTTP_200_OK)
async def read_me(user: CurrentUser) -> UserRead:
    """The authenticated user."""
    return UserRead.model_validate(user)


@router.patch("/me", response_model=UserRead, status_code=status.HTTP_200_OK)
async def update_me(session: SessionDep, user: CurrentUser, data: UserUpdate) -> UserRead:
    """Change email and/or username; 409 if taken by someone else."""
    return UserRead.model_validate(await service.update(session, user=user, data=data))


@router.post("/me/password", status_code=status.HTTP_204_NO_CONTENT, response_model=None)
async def change_password(session: SessionDep, user: CurrentUser, data: PasswordChange) -> None:
    """Replace the password; the current one must be given."""
    await service.change_password(session, user=user, data=data)


@router.get("", response_model=UserPage, status_code=status.HTTP_200_OK)
async def list_users(
    session: SessionDep,
    _: CurrentSuperuser,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> UserPage:
    """All users, oldest first (superusers only)."""
    users = await service.list_users(session, limit=limit + 1, offset=offset)
    return UserPage.of(users, limit=limit, offset=offset)
