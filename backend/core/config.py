"""Settings, read once per process from the environment and `.env`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Schemes people paste from provider dashboards; all mean PostgreSQL and end up on asyncpg.
_POSTGRES_SCHEMES = {"postgres", "postgresql", "postgresql+asyncpg"}


class SettingsError(ValueError):
    """A setting has a value the app cannot start with; the message names the variable."""


def normalise_database_url(raw: str, *, name: str = "DATABASE_URL") -> URL:
    """Parse a PostgreSQL URL and return it with the asyncpg driver.

    `postgresql://`, `postgres://` and `postgresql+asyncpg://` are accepted; unix sockets are
    given as `?host=/path/to/dir`. libpq's `sslmode` becomes asyncpg's `ssl`, so a managed
    database's URL works as the provider prints it.
    """
    try:
        url = make_url(raw.strip())
    except ArgumentError as exc:
        raise SettingsError(f"{name} is not a valid URL ({exc})") from None
    if url.drivername not in _POSTGRES_SCHEMES:
        raise SettingsError(
            f"{name} must start with postgresql:// or postgresql+asyncpg://, "
            f"got {url.drivername}://"
        )
    if not url.database:
        raise SettingsError(f"{name} names no database (expected .../<database>)")
    query = dict(url.query)
    if "sslmode" in query:
        query["ssl"] = query.pop("sslmode")
    if not url.host and "host" not in query:
        raise SettingsError(f"{name} names no host (expected @host or ?host=/socket/dir)")
    return url.set(drivername="postgresql+asyncpg", query=query)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    environment: str = "development"

    # Unset: an embedded PostgreSQL with pgvector is started under `embedded_db_dir`.
    database_url: str | None = None
    embedded_db_dir: Path = PROJECT_ROOT / ".data" / "postgres"

    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    db_echo: bool = False

    # Tables Alembic neither creates nor drops nor reports (LangGraph's checkpointer, ...).
    alembic_ignore_table_prefixes: Annotated[tuple[str, ...], NoDecode] = ("checkpoint",)
    # Seconds a replica waits for another replica's migration run before giving up.
    migration_lock_wait: float = Field(default=300.0, gt=0)
    # Seconds a migration statement waits for a table lock before failing (0 = forever).
    migration_lock_timeout: float = Field(default=5.0, ge=0)
    # Seconds one migration statement may run (0 = no limit).
    migration_statement_timeout: float = Field(default=0.0, ge=0)

    @field_validator("database_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return normalise_database_url(value).render_as_string(hide_password=False)

    @field_validator("alembic_ignore_table_prefixes", mode="before")
    @classmethod
    def _split_prefixes(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(p.strip() for p in value.split(",") if p.strip())
        return value

    @property
    def uses_embedded_db(self) -> bool:
        return self.database_url is None

    def sqlalchemy_url(self) -> URL:
        """The asyncpg URL to connect to, starting the embedded server if none is configured."""
        if self.database_url is not None:
            return make_url(self.database_url)
        from backend.db.embedded import embedded_database_url

        return make_url(embedded_database_url(self.embedded_db_dir))


def load_settings() -> Settings:
    """Read settings, turning a validation failure into one readable `SettingsError`."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = "_".join(str(part) for part in error["loc"]).upper()
            message = error["msg"].removeprefix("Value error, ")
            problems.append(message if message.startswith(name) else f"{name}: {message}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None


@lru_cache
def get_settings() -> Settings:
    return load_settings()
