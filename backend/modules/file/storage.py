"""Blob storage behind a small interface; a local directory now, an object store later."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from anyio import to_thread


@dataclass(frozen=True)
class StoredBlob:
    key: str
    size: int
    sha256: str


class TooLarge(Exception):
    """The stream passed the size limit; nothing was kept."""


class StorageError(Exception):
    """The storage could not keep the blob (a full disk, a read-only volume); nothing was kept."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(str(cause))
        self.no_space = cause.errno in (errno.ENOSPC, errno.EDQUOT)


class Storage(Protocol):
    async def save(self, chunks: AsyncIterator[bytes], *, max_size: int) -> StoredBlob:
        """Write the stream under a new key; raise `TooLarge` (keeping nothing) past max_size."""
        ...

    def open(self, key: str, *, chunk_size: int = ...) -> AsyncIterator[bytes]: ...

    async def delete(self, key: str) -> None:
        """Remove the blob; a missing one is not an error (deletes are retried)."""
        ...

    async def keys_older_than(self, cutoff: datetime) -> list[str]: ...


class LocalStorage:
    """Blobs as files under one directory, named by generated keys (never the client's name)."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()

    def _path(self, key: str) -> Path:
        # Keys are ours (hex), but never let one escape the root.
        if not key.isalnum():
            raise ValueError(f"bad storage key {key!r}")
        return self.root / key[:2] / key

    async def save(self, chunks: AsyncIterator[bytes], *, max_size: int) -> StoredBlob:
        key = secrets.token_hex(16)
        path = self._path(key)
        digest = hashlib.sha256()
        size = 0
        handle = None
        try:
            await to_thread.run_sync(lambda: path.parent.mkdir(parents=True, exist_ok=True))
            handle = await to_thread.run_sync(path.open, "xb")
            async for chunk in chunks:
                size += len(chunk)
                if size > max_size:
                    raise TooLarge()
                digest.update(chunk)
                await to_thread.run_sync(handle.write, chunk)
            # Closing flushes the last buffered bytes: on a full disk, this is where it fails.
            await to_thread.run_sync(handle.close)
        except BaseException as exc:
            if handle is not None:
                with contextlib.suppress(OSError):
                    handle.close()
            path.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise StorageError(exc) from exc
            raise
        return StoredBlob(key=key, size=size, sha256=digest.hexdigest())

    async def open(self, key: str, *, chunk_size: int = 1024 * 1024) -> AsyncIterator[bytes]:
        handle = await to_thread.run_sync(self._path(key).open, "rb")
        try:
            while chunk := await to_thread.run_sync(handle.read, chunk_size):
                yield chunk
        finally:
            handle.close()

    async def delete(self, key: str) -> None:
        await to_thread.run_sync(lambda: self._path(key).unlink(missing_ok=True))

    async def keys_older_than(self, cutoff: datetime) -> list[str]:
        def scan() -> list[str]:
            if not self.root.exists():
                return []
            limit = cutoff.astimezone(UTC).timestamp()
            return [
                entry.name
                for shard in self.root.iterdir()
                if shard.is_dir()
                for entry in os.scandir(shard)
                if entry.is_file() and entry.stat().st_mtime < limit
            ]

        return await to_thread.run_sync(scan)
