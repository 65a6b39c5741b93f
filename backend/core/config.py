"""Settings, read once per process from the environment and `.env`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, Self

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


class AppSettings(BaseSettings):
    """The base of every settings class: the core's `Settings` and each module's own.

    All read the same environment and `.env`, each declaring only the variables it uses; a
    module's class lives in its folder (`modules/<name>/settings.py`). `create_app` reads every
    one at start, so a bad value stops the process with one line that names it.
    """

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # "production" refuses development conveniences (a generated JWT secret, open API docs).
    environment: Literal["development", "test", "production"] = "development"

    @classmethod
    def load(cls) -> Self:
        """Read the settings, turning a validation failure into one readable `SettingsError`."""
        try:
            return cls()
        except ValidationError as exc:
            raise SettingsError("invalid settings: " + _problems(exc)) from None


def _problems(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        name = "_".join(str(part) for part in error["loc"]).upper()
        message = error["msg"].removeprefix("Value error, ")
        named = not name or message.startswith(name)
        problems.append(message if named else f"{name}: {message}")
    return "; ".join(problems)


def settings_classes() -> list[type[AppSettings]]:
    """Every settings class imported so far: the core's and each mounted module's, the direct
    subclasses of AppSettings. A subclass of one of those is a variant of it for one command
    (the re-embedding command's `ReembedSettings`), not settings of the app."""
    return AppSettings.__subclasses__()


class Settings(AppSettings):
    """What the core needs: the database, migrations, and the HTTP limits of every route."""

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

    # Tables Alembic neither creates nor drops nor reports (LangGraph's checkpointer, ...): by
    # prefix, and by exact name (LangGraph's store: a team's `store_items` is still Alembic's).
    alembic_ignore_table_prefixes: Annotated[tuple[str, ...], NoDecode] = ("checkpoint",)
    alembic_ignore_tables: Annotated[tuple[str, ...], NoDecode] = (
        "store",
        "store_vectors",
        "store_migrations",
        "vector_migrations",
    )
    # Seconds a replica waits for another replica's migration run before giving up.
    migration_lock_wait: float = Field(default=300.0, gt=0)
    # Seconds a migration statement waits for a table lock before failing (0 = forever).
    migration_lock_timeout: float = Field(default=5.0, ge=0)
    # Seconds one migration statement may run (0 = no limit).
    migration_statement_timeout: float = Field(default=0.0, ge=0)

    # Serve /docs, /redoc and /openapi.json. Unset: on, except with ENVIRONMENT=production.
    api_docs: bool | None = None

    # The app's loggers' level (`backend.*`; libraries log warnings and errors), and the
    # lines' format: `json` (one object per line, for a log collector) or `text`. Unset: json
    # with ENVIRONMENT=production, text otherwise.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] | None = None
    # Count and time every request for /metrics (off: /metrics has the pool and schema only).
    metrics: bool = True

    # OpenTelemetry traces (requests, SQL, outgoing HTTP) go to this OTLP/HTTP collector
    # (http://collector:4318); unset, nothing is traced. The SDK's own OTEL_* variables
    # (OTEL_EXPORTER_OTLP_HEADERS, OTEL_TRACES_SAMPLER, ...) apply as usual.
    otel_exporter_otlp_endpoint: str = ""
    otel_service_name: str = "backend"

    # Browser origins allowed to call the API (comma-separated, e.g. https://app.example.com).
    # None by default: a browser app on another origin is refused until listed here.
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()

    # The modules' background work (ingestion, the orphan-blob cleanup) runs in this process
    # (the default: a laptop needs nothing else), or, false, where `python -m backend.worker`
    # runs (production: the API's pods serve requests only).
    background_in_process: bool = True

    # A request body (JSON) above this is refused with 413; a route that streams its body
    # sets its own limit (uploads: MAX_UPLOAD_BYTES).
    max_request_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    # A request body that sends nothing for this many seconds is cut off with 408.
    request_body_idle_timeout: float = Field(default=15.0, gt=0)

    @property
    def docs_enabled(self) -> bool:
        return self.api_docs if self.api_docs is not None else self.environment != "production"

    @property
    def logs_as(self) -> Literal["json", "text"]:
        if self.log_format is not None:
            return self.log_format
        return "json" if self.environment == "production" else "text"

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

    @field_validator(
        "alembic_ignore_table_prefixes", "alembic_ignore_tables", "cors_origins", mode="before"
    )
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(p.strip() for p in value.split(",") if p.strip())
        return value

    @property
    def uses_embedded_db(self) -> bool:
        return self.database_url is None


@lru_cache
def get_settings() -> Settings:
    return Settings.load()
