from __future__ import annotations

import pytest
from fastapi import FastAPI

from backend.core.state import app_state
from backend.db.session import Database
from backend.modules.conversation.runs import Runs
from backend.modules.knowledge_base.ingestion import Ingestion
from tests.modules.file.fixtures import (  # noqa: F401 (fixtures, found by name)
    app_settings,
    storage,
    storage_backend,
    storage_dir,
)


@pytest.fixture
def app(app: FastAPI) -> FastAPI:
    """The test's app, its ingestion on the test's transaction too (documents to search)."""
    state = app_state(app)
    state.get(Ingestion).database = state.get(Database)
    # Every session of this app shares the test's one connection: the runs' event writer keeps
    # off it (a turn's end stores all its events, in its own transaction).
    state.get(Runs).flush_seconds = 3600
    return app
