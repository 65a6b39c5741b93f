"""A new module is a folder and one line: its settings, a resource built at start-up and a
streamed endpoint, with nothing changed anywhere else (the README's "Adding a module")."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from sqlalchemy.engine import URL

from backend.core.config import SettingsError
from backend.main import create_app
from tests.support import db
from tests.support.settings import configured

MODULE = {
    "__init__.py": "",
    "settings.py": """
        from typing import Annotated

        from fastapi import Depends
        from pydantic import Field

        from backend.core.config import AppSettings
        from backend.core.state import provided


        class TemplateTestNotesSettings(AppSettings):
            template_test_greeting: str = "hello"
            template_test_lines: int = Field(default=3, ge=1)


        NotesSettingsDep = Annotated[
            TemplateTestNotesSettings, Depends(provided(TemplateTestNotesSettings))
        ]
    """,
    "dependencies.py": """
        from collections.abc import AsyncIterator
        from contextlib import asynccontextmanager
        from typing import Annotated

        from fastapi import Depends, FastAPI

        from backend.core.state import app_state, provided

        from .settings import TemplateTestNotesSettings


        class Greeter:
            instances: list["Greeter"] = []

            def __init__(self, greeting: str) -> None:
                self.greeting = greeting
                self.closed = False
                Greeter.instances.append(self)

            async def aclose(self) -> None:
                self.closed = True


        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            state = app_state(app)
            greeter = Greeter(state.get(TemplateTestNotesSettings).template_test_greeting)
            state.provide(Greeter, greeter)
            try:
                yield
            finally:
                state.remove(Greeter)
                await greeter.aclose()


        GreeterDep = Annotated[Greeter, Depends(provided(Greeter))]
    """,
    "router.py": """
        from collections.abc import AsyncIterator

        from fastapi import APIRouter
        from fastapi.responses import StreamingResponse
        from sqlalchemy import text

        from backend.db.session import ReadSessionDep

        from .dependencies import GreeterDep, lifespan
        from .settings import NotesSettingsDep

        router = APIRouter(prefix="/template-test-notes", tags=["notes"], lifespan=lifespan)


        @router.get("/stream", response_class=StreamingResponse)
        async def stream(
            greeter: GreeterDep, settings: NotesSettingsDep, session: ReadSessionDep
        ) -> StreamingResponse:
            users = await session.scalar(text("SELECT count(*) FROM users"))

            async def lines() -> AsyncIterator[bytes]:
                for n in range(settings.template_test_lines):
                    yield f"{greeter.greeting} {n} of {users}\\n".encode()

            return StreamingResponse(lines(), media_type="text/plain")
    """,
}


@pytest.fixture
def notes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The module's folder, written as a team would, in a package of its own."""
    folder = tmp_path / "template_test_app" / "notes"
    folder.mkdir(parents=True)
    (folder.parent / "__init__.py").write_text("")
    for name, source in MODULE.items():
        (folder / name).write_text(textwrap.dedent(source).lstrip())
    monkeypatch.syspath_prepend(str(tmp_path))
    yield importlib.import_module("template_test_app.notes.router")
    for name in [name for name in sys.modules if name.startswith("template_test_app")]:
        del sys.modules[name]


async def test_a_module_with_settings_a_resource_and_a_stream_is_a_folder_and_one_line(
    notes: ModuleType, migrated_db: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEMPLATE_TEST_GREETING", "ahoy")  # its settings read the environment
    app = create_app(*configured(database_url=db.sync_url(migrated_db)))
    app.include_router(
        notes.router, prefix="/api/v1"
    )  # the one line (in main.py: a line in MODULES)

    greeter_type = importlib.import_module("template_test_app.notes.dependencies").Greeter
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        [greeter] = greeter_type.instances
        async with client.stream("GET", "/api/v1/template-test-notes/stream") as response:
            assert response.status_code == 200
            body = [line async for line in response.aiter_lines()]
        assert body == ["ahoy 0 of 0", "ahoy 1 of 0", "ahoy 2 of 0"]
        assert (
            "/api/v1/template-test-notes/stream"
            in (await client.get("/openapi.json")).json()["paths"]
        )
        # The other modules still start and answer beside it.
        assert (await client.get("/api/v1/users/me")).json()["code"] == "not_authenticated"
    assert greeter.closed, "the module's lifespan closes what it built"


def test_a_new_module_s_bad_setting_stops_the_app_with_one_line(
    notes: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEMPLATE_TEST_LINES", "0")
    with pytest.raises(SettingsError, match="TEMPLATE_TEST_LINES: Input should be greater"):
        create_app()
