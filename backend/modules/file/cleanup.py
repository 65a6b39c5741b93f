"""Remove blobs that no file row points to: `python -m backend.modules.file.cleanup` runs it
once; where background work runs (the worker, or the API with BACKGROUND_IN_PROCESS) it runs
every FILE_CLEANUP_SECONDS.

Safe alongside live traffic: only blobs older than FILE_ORPHAN_MIN_AGE_SECONDS (an hour) are
candidates, so uploads in flight are never touched. Two processes running it at once delete
the same blobs, which is harmless.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from backend.core.config import Settings
from backend.db.session import Database, create_engine
from backend.modules.file import service
from backend.modules.file.backends import make_storage
from backend.modules.file.settings import FileSettings
from backend.modules.file.storage import Storage, StorageError

logger = logging.getLogger(__name__)


async def run_once(database: Database, storage: Storage, settings: FileSettings) -> int:
    """One pass; the number of blobs removed."""
    async with database.sessionmaker() as session:
        removed = await service.cleanup_orphans(
            session,
            storage=storage,
            older_than=timedelta(seconds=settings.file_orphan_min_age_seconds),
        )
    if removed:
        logger.info("removed %d orphaned blob(s)", len(removed))
    return len(removed)


async def run_periodically(database: Database, storage: Storage, settings: FileSettings) -> None:
    """A pass at start, then every FILE_CLEANUP_SECONDS; a failed pass is logged and retried
    at the next."""
    while True:
        try:
            await run_once(database, storage, settings)
        except StorageError as exc:  # the store is away: one line, not a traceback an hour
            logger.error(
                "orphan cleanup failed, retried in %gs: %s", settings.file_cleanup_seconds, exc
            )
        except Exception:
            logger.exception("orphan cleanup failed")
        await asyncio.sleep(settings.file_cleanup_seconds)


async def main() -> None:
    engine = create_engine(Settings.load())
    try:
        settings = FileSettings.load()
        removed = await run_once(Database.of(engine), make_storage(settings), settings)
    finally:
        await engine.dispose()
    print(f"removed {removed} orphaned blob(s)")


if __name__ == "__main__":
    asyncio.run(main())
