from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from sqlalchemy import bindparam, func, select
from sqlalchemy import delete as sa_delete
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.errors import StorageFull
from backend.core.pagination import PageParams, paged
from backend.db.session import after_commit, after_rollback, release_connection
from backend.modules.file.exceptions import (
    FileNotFound,
    FileTooLarge,
    QuotaExceeded,
    StorageUnavailable,
)
from backend.modules.file.models import File
from backend.modules.file.storage import Storage, StorageError, TooLarge
from backend.modules.file.upload import IncomingFile
from backend.modules.user.models import User

logger = logging.getLogger(__name__)


def download_headers(filename: str, content_type: str) -> dict[str, str]:
    """What a download answers with; kept with the blob too, for presigned downloads."""
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "_" for ch in filename)
    encoded = quote(filename, safe="")
    disposition = f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
    return {"Content-Type": content_type, "Content-Disposition": disposition}


async def usage(session: AsyncSession, *, owner: User) -> int:
    """Bytes the owner's files take."""
    used = await session.scalar(
        select(func.coalesce(func.sum(File.size), 0)).where(File.owner_id == owner.id)
    )
    return int(used or 0)


async def create(
    session: AsyncSession,
    *,
    owner: User,
    storage: Storage,
    upload: IncomingFile,
    max_size: int,
    quota: int = 0,
) -> File:
    """Stream the upload to storage, then record it. A failed request keeps neither.

    No database connection is held while the client sends the body (a slow client would keep
    it from everyone else): the quota is read, the connection handed back, the body streamed,
    and only then is the row written, in a short transaction that checks the quota again
    under a lock on the owner (two uploads at once cannot both squeeze in).
    """
    used = await usage(session, owner=owner) if quota else 0
    room = max(quota - used, 0) if quota else max_size
    await release_connection(session)
    try:
        blob = await storage.save(
            upload.chunks,
            max_size=min(max_size, room),
            headers=download_headers(upload.filename, upload.content_type),
        )
    except TooLarge:
        if quota and room < max_size:
            raise QuotaExceeded(quota, used) from None
        raise FileTooLarge(max_size) from None
    except StorageError as exc:
        logger.error("file storage could not keep an upload: %s", exc)
        raise (StorageFull() if exc.no_space else StorageUnavailable()) from None
    after_rollback(session, lambda: remove_blobs(storage, [blob.key]))
    if quota:
        await session.execute(select(User.id).where(User.id == owner.id).with_for_update())
        used = await usage(session, owner=owner)
        if used + blob.size > quota:
            raise QuotaExceeded(quota, used)
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
    return file


# Built once with bind parameters (see backend/core/pagination.py): cheaper than per request.
OWNED = select(File).where(File.id == bindparam("file_id"), File.owner_id == bindparam("owner_id"))
NEWEST_FIRST = paged(
    select(File)
    .where(File.owner_id == bindparam("owner_id"))
    .order_by(File.created_at.desc(), File.id.desc())
)


async def get(session: AsyncSession, *, owner: User, file_id: uuid.UUID) -> File:
    """The owner's file; another user's file is as absent as a missing one."""
    file = await session.scalar(OWNED, {"file_id": file_id, "owner_id": owner.id})
    if file is None:
        raise FileNotFound()
    return file


async def list(session: AsyncSession, *, owner: User, page: PageParams) -> Sequence[File]:
    return (await session.scalars(NEWEST_FIRST, page.bind(owner_id=owner.id))).all()


async def open_content(*, file: File, storage: Storage) -> AsyncIterator[bytes]:
    """The file's bytes, opened before any is sent: 503 if the storage cannot serve them."""
    try:
        return await storage.open(file.storage_key)
    except StorageError as exc:
        logger.error("file storage could not read blob %s: %s", file.storage_key, exc)
        raise StorageUnavailable("File storage could not be read. Retry shortly.") from None


async def read_content(*, file: File, storage: Storage) -> bytes:
    """The whole file in memory: for files known to be small (the caller checked `size`)."""
    return b"".join([chunk async for chunk in await open_content(file=file, storage=storage)])


async def delete(session: AsyncSession, *, file: File, storage: Storage) -> None:
    """Remove the row now and the blob once that is committed.

    A crash in between leaves a blob without a row, which `cleanup_orphans` removes; never a
    row without its blob.
    """
    key = file.storage_key
    await session.execute(sa_delete(File).where(File.id == file.id))
    after_commit(session, lambda: remove_blobs(storage, [key]))


async def delete_all(session: AsyncSession, *, owner: User, storage: Storage) -> None:
    """Delete every file of `owner`: rows now, blobs once that is committed."""
    keys = (await session.scalars(select(File.storage_key).where(File.owner_id == owner.id))).all()
    await session.execute(sa_delete(File).where(File.owner_id == owner.id))
    after_commit(session, lambda: remove_blobs(storage, keys))


async def remove_blobs(storage: Storage, keys: Sequence[str]) -> None:
    """Delete blobs whose rows are gone; those the storage refuses are left to the orphan
    cleanup (its next run after the storage answers again), and said so in the log."""
    left = 0
    for key in keys:
        try:
            await storage.delete(key)
        except StorageError as exc:
            left += 1
            if left == 1:
                logger.error("file storage could not delete blob %s: %s", key, exc)
    if left:
        logger.warning(
            "%d deleted file(s) left their blob in storage; the orphan cleanup removes them on "
            "its first run after the storage answers (FILE_CLEANUP_SECONDS)",
            left,
        )


async def cleanup_orphans(
    session: AsyncSession, *, storage: Storage, older_than: timedelta = timedelta(hours=1)
) -> Sequence[str]:
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
