"""The ASGI app: `uvicorn backend.main:app`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from backend import health
from backend.core.config import Settings, SettingsError, get_settings
from backend.core.errors import install_error_handlers
from backend.core.limits import BodySizeLimit, HeadAsGet, RetryReadsOnDisconnect
from backend.core.openapi import install_openapi
from backend.core.security import set_hash_concurrency
from backend.db.embedded import release_embedded_database
from backend.db.session import create_engine, create_read_sessionmaker, create_sessionmaker
from backend.modules.file.router import router as file_router
from backend.modules.file.storage import LocalStorage
from backend.modules.knowledge_base.embeddings import create_embedder
from backend.modules.knowledge_base.models import EMBEDDING_DIM
from backend.modules.knowledge_base.router import router as knowledge_base_router
from backend.modules.user.router import auth_router
from backend.modules.user.router import router as user_router

API_PREFIX = "/api/v1"

# One line per module: a new module mounts its router here.
api = APIRouter(prefix=API_PREFIX)
api.include_router(auth_router)
api.include_router(user_router)
api.include_router(file_router)
api.include_router(knowledge_base_router)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    if settings.embedding_dim != EMBEDDING_DIM:
        raise SettingsError(
            f"EMBEDDING_DIM is {settings.embedding_dim} but the chunks.embedding column holds "
            f"vector({EMBEDDING_DIM}): set EMBEDDING_DIM={EMBEDDING_DIM}, or change the column "
            f"with a migration and re-embed"
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings)
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine)
        app.state.read_sessionmaker = create_read_sessionmaker(engine)
        app.state.storage = LocalStorage(settings.file_storage_dir)
        app.state.embedder = create_embedder(settings)
        set_hash_concurrency(settings.password_hash_concurrency)
        try:
            yield
        finally:
            close = getattr(app.state.embedder, "aclose", None)
            if close is not None:
                await close()
            await engine.dispose()
            if settings.uses_embedded_db:
                release_embedded_database(settings.embedded_db_dir)

    docs = settings.docs_enabled
    app = FastAPI(
        title="backend",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.settings = settings
    install_error_handlers(app)
    install_openapi(app)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_request_bytes,
        exempt={("POST", f"{API_PREFIX}/files")},
        idle_timeout=settings.request_body_idle_timeout,
    )
    app.add_middleware(RetryReadsOnDisconnect)
    app.add_middleware(HeadAsGet)
    app.include_router(health.router)
    app.include_router(api)
    return app


def _app_or_exit() -> FastAPI:
    try:
        return create_app()
    except SettingsError as exc:
        # One line a person can act on, not a traceback through uvicorn's importer.
        raise SystemExit(f"backend: {exc} (set in the environment or .env)") from None


app = _app_or_exit()
