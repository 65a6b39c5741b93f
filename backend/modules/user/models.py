from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Index, String, false, text, true
from sqlalchemy.orm import Mapped, mapped_column

from backend.db.base import Base, Timestamps, UUIDPrimaryKey


class User(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "users"

    # Stored lower-case (the unique key); `email_as_registered` keeps what the user typed.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    email_as_registered: Mapped[str | None] = mapped_column(String(320))
    username: Mapped[str] = mapped_column(String(64), unique=True)
    hashed_password: Mapped[str] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(server_default=true())
    is_superuser: Mapped[bool] = mapped_column(server_default=false())
    # In every access token; bumping it (password change, deactivation) ends every older token.
    token_version: Mapped[int] = mapped_column(server_default=text("0"))


class LoginThrottle(Base):
    """Failed logins per key (an account, a client address) in the current window.

    In PostgreSQL so that every replica sees the same count; rows expire with their window.
    """

    __tablename__ = "login_throttles"

    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    failures: Mapped[int]
    window_ends: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_login_throttles_window_ends", "window_ends"),)
