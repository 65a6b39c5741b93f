"""The ASGI app: `uvicorn backend.main:app`. Each module is one line here."""

from __future__ import annotations

import importlib

from fastapi import APIRouter, FastAPI

from backend import health, metrics
from backend.core.app import app_or_exit, new_app
from backend.core.config import AppSettings
from backend.db.session import database_lifespan

API_PREFIX = "/api/v1"
# One line per module (its folder under backend/modules/), lowest first: a module imports only
# those above it (tests/core/test_module_order.py). Its router brings its lifespan along; they
# start in this order. Removing one is its folder and its line: `python3 dev.py module remove`.
MODULES = (
    "user",
    "file",
    "knowledge_base",
    "conversation",
)


def module_routers() -> list[APIRouter]:
    """Each module's `router` (from its `router.py`), in the order above."""
    return [importlib.import_module(f"backend.modules.{name}.router").router for name in MODULES]


def create_app(*settings: AppSettings) -> FastAPI:
    """The app; `settings` (any settings classes) replace what the environment says."""
    routers = module_routers()  # first: new_app reads every settings class imported
    app = new_app(settings, lifespan=database_lifespan)
    app.include_router(health.router)
    app.include_router(metrics.router)
    # Each mounted on the app itself: every router nested in between is walked again to match
    # each request (measured: 14% of `GET /files`'s CPU).
    for router in routers:
        app.include_router(router, prefix=API_PREFIX)
    return app


def __getattr__(name: str) -> FastAPI:
    """`app`, built when uvicorn first asks for it: importing MODULES (the worker does) builds
    no app."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    app = app_or_exit(create_app)
    globals()["app"] = app
    return app
