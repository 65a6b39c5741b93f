from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.db.session import after_commit, after_rollback
from backend.modules.file.exceptions import FileNotFound, FileTooLarge
from backend.modules.file.models import File
from backend.modules.file.storage import Storage, TooLarge
from backend.modules.file.upload import IncomingFile
from backend.modules.user.models import User


async def create(
    session: AsyncSession, *, owner: User, storage: Storage, upload: IncomingFile, max_size: int
) -> File:
    """Stream the upload to storage, then record it. A failed request keeps neither."""
    try:
        blob = await storage.save(upload.chunks, max_size=max_size)
    except TooLarge:
        raise FileTooLarge(max_size) from None
    after_rollback(session, lambda: storage.delete(blob.key))
    file = File(
        owner_id=owner.id,
        filename=upload.filename,
        content_type=upload.content_type,
        size=blob.size,
        sha256=blob.sha256,
        storage_key=blob.key,
    )
    session.add(file)
    await session.flush()
    await session.refresh(file)
    return file


async def get(session: AsyncSession, *, owner: User, file_id: uuid.UUID) -> File:
    """The owner's file; another user's file is as absent as a missing one."""
    file = await session.scalar(select(File).where(File.id == file_id, File.owner_id == owner.id))
    if file is None:
        raise FileNotFound()
    return file


async def list_files(
    session: AsyncSession, *, owner: User, limit: int, offset: int
) -> Sequence[File]:
    query = (
        select(File)
        .where(File.owner_id == owner.id)
        .order_by(File.created_at.desc(), File.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return (await session.scalars(query)).all()


async def delete(session: AsyncSession, *, file: File, storage: Storage) -> None:
    """Remove the row now and the blob once that is committed.

    A crash in between leaves a blob without a row, which `cleanup_orphans` removes; never a
    row without its blob.
    """
    key = file.storage_key
    await session.delete(file)
    await session.flush()
    after_commit(session, lambda: storage.delete(key))


async def cleanup_orphans(
    session: AsyncSession, *, storage: Storage, older_than: timedelta = timedelta(hours=1)
) -> list[str]:
    """Delete blobs no row points to (left by crashes); young ones may be uploads in flight."""
    candidates = await storage.keys_older_than(datetime.now(UTC) - older_than)
    if not candidates:
        return []
    known = set(
        await session.scalars(select(File.storage_key).where(File.storage_key.in_(candidates)))
    )
    orphans = [key for key in candidates if key not in known]
    for key in orphans:
        await storage.delete(key)
    return orphans
