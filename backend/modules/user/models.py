from __future__ import annotations

from sqlalchemy import String, false, true
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
