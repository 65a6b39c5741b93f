from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.config import Settings
from backend.core.errors import raises
from backend.core.limits import set_body_limit
from backend.core.state import ReadinessChecks, app_state, provided
from backend.db.session import Database, ReadSessionDep, release_connection
from backend.modules.file import service
from backend.modules.file.backends import make_storage
from backend.modules.file.cleanup import run_periodically
from backend.modules.file.exceptions import FileNotFound
from backend.modules.file.models import File
from backend.modules.file.settings import FileSettings, FileSettingsDep
from backend.modules.file.storage import Storage
from backend.modules.user.dependencies import CurrentUser
from backend.modules.user.hooks import AccountHooks
from backend.modules.user.models import User


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The module's start-up: the blob storage its handlers (and other modules) use, checked
    by /readyz; where background work runs, the periodic orphan cleanup."""
    state = app_state(app)
    settings = state.get(FileSettings)
    storage = make_storage(settings)
    state.provide(Storage, storage)
    checks = state.get(ReadinessChecks)
    checks["file storage"] = storage.check
    hooks = state.get(AccountHooks).on_delete

    async def delete_files(session: AsyncSession, user: User) -> None:
        await service.delete_all(session, owner=user, storage=storage)

    hooks.append(delete_files)
    cleanup = None
    if state.get(Settings).background_in_process and settings.file_cleanup_seconds:
        work = run_periodically(state.get(Database), storage, settings)
        cleanup = asyncio.create_task(work, name="orphan-cleanup")
    try:
        yield
    finally:
        if cleanup is not None:
            cleanup.cancel()
            await asyncio.gather(cleanup, return_exceptions=True)
        hooks.remove(delete_files)
        checks.pop("file storage", None)
        state.remove(Storage)


StorageDep = Annotated[Storage, Depends(provided(Storage))]

# Multipart framing around the file; a body beyond limit + this is refused before reading.
MULTIPART_OVERHEAD = 64 * 1024


async def upload_limit(request: Request, settings: FileSettingsDep) -> int:
    """The upload route's own body limit: the file's limit plus its multipart framing."""
    set_body_limit(request, settings.max_upload_bytes + MULTIPART_OVERHEAD)
    return settings.max_upload_bytes


UploadLimit = Annotated[int, Depends(upload_limit)]


@raises(FileNotFound)
async def owned_file(file_id: uuid.UUID, session: ReadSessionDep, user: CurrentUser) -> File:
    """Load the caller's file or 404 (and hand the connection back: the handler may stream)."""
    file = await service.get(session, owner=user, file_id=file_id)
    await release_connection(session)
    return file


OwnedFile = Annotated[File, Depends(owned_file)]
