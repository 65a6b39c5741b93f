"""Remove blobs that no file row points to: `python -m backend.modules.file.cleanup`.

Run it from cron or a Kubernetes CronJob; it is safe alongside live traffic (only blobs older
than an hour are candidates, so uploads in flight are never touched).
"""

from __future__ import annotations

import asyncio

from backend.core.config import get_settings
from backend.db.session import create_engine, create_sessionmaker
from backend.modules.file import service
from backend.modules.file.storage import LocalStorage


async def main() -> None:
    settings = get_settings()
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as session:
            removed = await service.cleanup_orphans(
                session, storage=LocalStorage(settings.file_storage_dir)
            )
    finally:
        await engine.dispose()
    print(f"removed {len(removed)} orphaned blob(s)")


if __name__ == "__main__":
    asyncio.run(main())
