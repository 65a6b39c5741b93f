"""Settings, read once per process from the environment and `.env`."""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
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

    # "production" refuses development conveniences (a generated JWT secret).
    environment: Literal["development", "test", "production"] = "development"

    # Unset: an embedded PostgreSQL with pgvector is started under `embedded_db_dir`.
    database_url: str | None = None
    embedded_db_dir: Path = PROJECT_ROOT / ".data" / "postgres"

    db_pool_size: int = Field(default=10, ge=1)
    # 0: under load, requests wait for a pooled connection. Overflow connections are closed
    # on return, so a busy process would keep opening new ones (and re-preparing statements).
    db_max_overflow: int = Field(default=0, ge=0)
    db_pool_pre_ping: bool = False
    # Seconds a request waits for a free pooled connection before a 503 with Retry-After.
    db_pool_timeout: float = Field(default=3.0, gt=0)
    db_echo: bool = False

    # Tables Alembic neither creates nor drops nor reports (LangGraph's checkpointer, ...).
    alembic_ignore_table_prefixes: Annotated[tuple[str, ...], NoDecode] = ("checkpoint",)
    # Seconds a replica waits for another replica's migration run before giving up.
    migration_lock_wait: float = Field(default=300.0, gt=0)
    # Seconds a migration statement waits for a table lock before failing (0 = forever).
    migration_lock_timeout: float = Field(default=5.0, ge=0)
    # Seconds one migration statement may run (0 = no limit).
    migration_statement_timeout: float = Field(default=0.0, ge=0)

    # Auth: HS256 access tokens. Unset secret: one is generated and kept in .data/ (development).
    jwt_secret: SecretStr | None = None
    access_token_minutes: int = Field(default=60, ge=1)
    # argon2 hashes at once per process (each takes ~64 MiB and a core for ~50 ms).
    password_hash_concurrency: int = Field(default=2, ge=1)
    # Failed logins: after this many within the window, per account and per client address,
    # logins answer 429 with Retry-After until the window ends. Shared by all replicas (in
    # PostgreSQL).
    login_max_failures: int = Field(default=10, ge=1)
    login_failure_window: float = Field(default=300.0, gt=0)

    # Serve /docs, /redoc and /openapi.json. Unset: on, except with ENVIRONMENT=production.
    api_docs: bool | None = None

    # Files: local directory storage; uploads above the limit are refused while streaming.
    file_storage_dir: Path = PROJECT_ROOT / ".data" / "files"
    max_upload_bytes: int = Field(default=50 * 1024 * 1024, ge=1)
    # Any other request body (JSON) above this is refused with 413.
    max_request_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    # A request body that sends nothing for this many seconds is cut off with 408.
    request_body_idle_timeout: float = Field(default=15.0, gt=0)
    # Bytes of files each user may keep (0 = no quota).
    storage_quota_bytes: int = Field(default=1024 * 1024 * 1024, ge=0)

    # Knowledge bases: chunking, embeddings, search.
    chunk_size: int = Field(default=1000, ge=50)
    chunk_overlap: int = Field(default=150, ge=0)
    max_document_bytes: int = Field(default=5 * 1024 * 1024, ge=1)
    embedding_provider: Literal["hashing", "openai"] = "hashing"
    embedding_dim: int = Field(default=384, ge=1)
    embedding_base_url: str = "https://api.openai.com/v1"
    embedding_model: str = "text-embedding-3-small"
    embedding_api_key: SecretStr | None = None
    embedding_batch_size: int = Field(default=64, ge=1)
    embedding_timeout: float = Field(default=30.0, gt=0)
    # Knowledge bases up to this many chunks are searched exactly; larger ones use HNSW.
    search_exact_max_chunks: int = Field(default=10_000, ge=0)
    search_ef_search: int = Field(default=100, ge=1, le=1000)
    # pgvector's iterative index scan: keeps walking the graph until top_k rows pass the filter.
    search_iterative_scan: Literal["relaxed_order", "strict_order", "off"] = "relaxed_order"

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("CHUNK_OVERLAP must be smaller than CHUNK_SIZE")
        if self.environment == "production" and self.jwt_secret is None:
            raise ValueError("JWT_SECRET must be set in production (ENVIRONMENT=production)")
        if self.jwt_secret is not None and len(self.jwt_secret.get_secret_value()) < 32:
            raise ValueError("JWT_SECRET must be at least 32 characters")
        return self

    @property
    def docs_enabled(self) -> bool:
        return self.api_docs if self.api_docs is not None else self.environment != "production"

    @property
    def jwt_key(self) -> str:
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        return _development_jwt_secret()

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


def load_settings() -> Settings:
    """Read settings, turning a validation failure into one readable `SettingsError`."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = "_".join(str(part) for part in error["loc"]).upper()
            message = error["msg"].removeprefix("Value error, ")
            named = not name or message.startswith(name)
            problems.append(message if named else f"{name}: {message}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None


# Where development keeps its generated JWT secret, so a reload or a restart does not log
# everyone out. Production refuses to start without JWT_SECRET and never reads it.
DEV_JWT_SECRET_FILE = PROJECT_ROOT / ".data" / "dev-jwt-secret"


@lru_cache
def _development_jwt_secret(path: Path = DEV_JWT_SECRET_FILE) -> str:
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


@lru_cache
def get_settings() -> Settings:
    return load_settings()
