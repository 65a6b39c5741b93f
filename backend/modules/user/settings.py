"""The user module's settings: access tokens, password hashing, login throttling."""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Self

from fastapi import Depends
from pydantic import Field, SecretStr, model_validator

from backend.core.config import PROJECT_ROOT, AppSettings
from backend.core.state import provided


class UserSettings(AppSettings):
    # Auth: HS256 access tokens. Unset secret: one is generated and kept in .data/ (development).
    jwt_secret: SecretStr | None = None
    access_token_minutes: int = Field(default=60, ge=1)
    # Seconds an authenticated user is kept in memory (0 = off). A change through this replica
    # takes effect at once; one made through another replica within this many seconds.
    auth_cache_seconds: float = Field(default=5.0, ge=0, le=300)
    # argon2 hashes at once per process (each takes ~64 MiB and a core for ~50 ms).
    password_hash_concurrency: int = Field(default=2, ge=1)
    # Failed logins: after this many within the window, per account and per client address,
    # logins answer 429 with Retry-After until the window ends. Shared by all replicas (in
    # PostgreSQL).
    login_max_failures: int = Field(default=10, ge=1)
    login_failure_window: float = Field(default=300.0, gt=0)

    @model_validator(mode="after")
    def _check_secret(self) -> Self:
        if self.environment == "production" and self.jwt_secret is None:
            raise ValueError("JWT_SECRET must be set in production (ENVIRONMENT=production)")
        if self.jwt_secret is not None and len(self.jwt_secret.get_secret_value()) < 32:
            raise ValueError("JWT_SECRET must be at least 32 characters")
        return self

    @property
    def jwt_key(self) -> str:
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        return development_jwt_secret()


UserSettingsDep = Annotated[UserSettings, Depends(provided(UserSettings))]

# Where development keeps its generated JWT secret, so a reload or a restart does not log
# everyone out. Production refuses to start without JWT_SECRET and never reads it.
DEV_JWT_SECRET_FILE = PROJECT_ROOT / ".data" / "dev-jwt-secret"


@lru_cache
def development_jwt_secret(path: Path = DEV_JWT_SECRET_FILE) -> str:
    """The development secret: read from `path`, or made once and kept there (mode 0600).

    Processes starting at once (uvicorn's worker, a test run) agree: the file appears whole
    (written aside, then hard-linked into place) and the first to link it wins. On a read-only
    filesystem the secret lives and dies with the process.
    """
    try:
        existing = path.read_text().strip()
        if len(existing) >= 32:
            return existing
    except OSError:
        pass
    secret = secrets.token_urlsafe(48)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        aside = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secret)
        try:
            os.link(aside, path)
        except FileExistsError:
            secret = path.read_text().strip()
        finally:
            aside.unlink()
    except OSError:
        pass
    return secret
