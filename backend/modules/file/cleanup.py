"""Remove blobs that no file row points to: `python -m backend.modules.file.cleanup`.

Run it from cron or a Kubernetes CronJob; it is safe alongside live traffic (only blobs older
than an hour are candidates, so uploads in flight are never touched).
"""

from __future__ import annotations

import asyncio

from backend.core.config import Settings
from backend.db.session import create_engine, create_sessionmaker
from backend.modules.file import service
from backend.modules.file.settings import FileSettings
from backend.modules.file.storage import make_storage


async def main() -> None:
    engine = create_engine(Settings.load())
    storage = make_storage(FileSettings.load())
    try:
        async with create_sessionmaker(engine)() as session:
            removed = await service.cleanup_orphans(session, storage=storage)
    finally:
        await engine.dispose()
    print(f"removed {len(removed)} orphaned blob(s)")


if __name__ == "__main__":
    asyncio.run(main())
