"""pytest-alembic's own checks, driving env.py the way it does: an AsyncEngine handed in."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pytest_alembic import Config
from pytest_alembic.tests import (  # noqa: F401  (collected as this module's tests)
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from backend.db.migrations import ALEMBIC_INI, SCRIPT_LOCATION


@pytest.fixture
def alembic_config() -> Config:
    return Config(
        config_options={"file": str(ALEMBIC_INI), "script_location": str(SCRIPT_LOCATION)}
    )


@pytest.fixture
async def alembic_engine(empty_db: URL) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(empty_db)
    yield engine
    await engine.dispose()
