"""The ASGI app: `uvicorn backend.main:app`. Each module is one line here."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from backend import health
from backend.core.app import app_or_exit, new_app
from backend.core.config import AppSettings
from backend.db.session import database_lifespan
from backend.modules.file import router as file
from backend.modules.knowledge_base import router as knowledge_base
from backend.modules.user import router as user

api = APIRouter(prefix="/api/v1")
# A module's router brings its lifespan (what it builds at start-up) along.
api.include_router(user.router)
api.include_router(file.router)
api.include_router(knowledge_base.router)


def create_app(*settings: AppSettings) -> FastAPI:
    """The app; `settings` (any settings classes) replace what the environment says."""
    app = new_app(settings, lifespan=database_lifespan)
    app.include_router(health.router)
    app.include_router(api)
    return app


app = app_or_exit(create_app)
