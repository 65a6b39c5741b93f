from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Request

from backend.core.errors import raises
from backend.db.session import ReadSessionDep, release_connection
from backend.modules.file import service
from backend.modules.file.exceptions import FileNotFound
from backend.modules.file.models import File
from backend.modules.file.storage import Storage
from backend.modules.user.dependencies import CurrentUser


def get_storage(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


StorageDep = Annotated[Storage, Depends(get_storage)]


@raises(FileNotFound)
async def owned_file(file_id: uuid.UUID, session: ReadSessionDep, user: CurrentUser) -> File:
    """Load the caller's file or 404 (and hand the connection back: the handler may stream)."""
    file = await service.get(session, owner=user, file_id=file_id)
    await release_connection(session)
    return file


OwnedFile = Annotated[File, Depends(owned_file)]
