"""Blob storage behind a small interface: a local directory, or an S3-compatible bucket (s3.py)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Protocol

from anyio import to_thread


@dataclass(frozen=True)
class StoredBlob:
    key: str
    size: int
    sha256: str


class TooLarge(Exception):
    """The stream passed the size limit; nothing was kept."""


class StorageError(Exception):
    """The storage could not keep or serve the blob (a full disk, an unreachable bucket)."""

    def __init__(self, message: str, *, no_space: bool = False) -> None:
        super().__init__(message)
        self.no_space = no_space

    @classmethod
    def from_os_error(cls, cause: OSError) -> StorageError:
        return cls(str(cause), no_space=cause.errno in (errno.ENOSPC, errno.EDQUOT))


class Storage(Protocol):
    async def save(
        self,
        chunks: AsyncIterator[bytes],
        *,
        max_size: int,
        headers: Mapping[str, str] | None = None,
    ) -> StoredBlob:
        """Write the stream under a new key; raise `TooLarge` (keeping nothing) past max_size.

        `headers` (Content-Type, Content-Disposition) are kept with the blob where the backend
        can, so a presigned download serves them.
        """
        ...

    async def open(self, key: str, *, chunk_size: int = ...) -> AsyncIterator[bytes]:
        """Open the blob now, raising `StorageError` if it cannot be read; its bytes come from
        the iterator returned (so a failure is known before a response starts)."""
        ...

    async def download_url(self, key: str) -> str | None:
        """A short-lived URL the client can fetch the blob from, or None to stream it here."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the blob; a missing one is not an error (deletes are retried). Raises
        `StorageError` when the storage cannot be reached."""
        ...

    async def check(self) -> None:
        """Raise `StorageError`, saying why, unless blobs can be kept and read (for /readyz)."""
        ...

    async def keys_older_than(self, cutoff: datetime) -> list[str]:
        """Our blobs last written before `cutoff`; `StorageError` when it cannot be listed."""
        ...


class Measured:
    """A blob's bytes on their way to storage: counted, hashed, and cut off past `max_size`."""

    def __init__(self, key: str, chunks: AsyncIterator[bytes], max_size: int) -> None:
        self.key = key
        self._chunks = chunks
        self._max_size = max_size
        self._digest = hashlib.sha256()
        self._size = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            self._size += len(chunk)
            if self._size > self._max_size:
                raise TooLarge()
            self._digest.update(chunk)
            yield chunk

    def stored(self) -> StoredBlob:
        return StoredBlob(key=self.key, size=self._size, sha256=self._digest.hexdigest())


async def _read_file(handle: BinaryIO, chunk_size: int) -> AsyncIterator[bytes]:
    try:
        while chunk := await to_thread.run_sync(handle.read, chunk_size):
            yield chunk
    finally:
        handle.close()


def new_key() -> str:
    """A blob's name: ours, never the client's (hex, so it is safe as a path or object key)."""
    return secrets.token_hex(16)


def is_blob_key(name: str) -> bool:
    """Whether `name` has the shape of our keys (cleanup touches nothing else in a bucket)."""
    return len(name) == 32 and all(ch in "0123456789abcdef" for ch in name)


def valid_key(key: str) -> str:
    if not is_blob_key(key):
        raise ValueError(f"bad storage key {key!r}")
    return key


class LocalStorage:
    """Blobs as files under one directory, named by generated keys (never the client's name)."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()

    def _path(self, key: str) -> Path:
        # Keys are ours (hex), but never let one escape the root.
        return self.root / key[:2] / valid_key(key)

    async def save(
        self,
        chunks: AsyncIterator[bytes],
        *,
        max_size: int,
        headers: Mapping[str, str] | None = None,
    ) -> StoredBlob:
        blob = Measured(new_key(), chunks, max_size)
        path = self._path(blob.key)
        handle = None
        try:
            await to_thread.run_sync(lambda: path.parent.mkdir(parents=True, exist_ok=True))
            handle = await to_thread.run_sync(path.open, "xb")
            async for chunk in blob:
                await to_thread.run_sync(handle.write, chunk)
            # Closing flushes the last buffered bytes: on a full disk, this is where it fails.
            await to_thread.run_sync(handle.close)
        except BaseException as exc:
            if handle is not None:
                with contextlib.suppress(OSError):
                    handle.close()
            with contextlib.suppress(OSError):  # the disk that failed the write may fail this
                path.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise StorageError.from_os_error(exc) from exc
            raise
        return blob.stored()

    async def open(self, key: str, *, chunk_size: int = 1024 * 1024) -> AsyncIterator[bytes]:
        try:
            handle = await to_thread.run_sync(self._path(key).open, "rb")
        except OSError as exc:
            raise StorageError.from_os_error(exc) from exc
        return _read_file(handle, chunk_size)

    async def download_url(self, key: str) -> str | None:
        return None

    async def delete(self, key: str) -> None:
        try:
            await to_thread.run_sync(lambda: self._path(key).unlink(missing_ok=True))
        except OSError as exc:
            raise StorageError.from_os_error(exc) from exc

    async def check(self) -> None:
        def writable() -> None:
            self.root.mkdir(parents=True, exist_ok=True)
            if not os.access(self.root, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, "not writable by this process", self.root)

        try:
            await to_thread.run_sync(writable)
        except OSError as exc:
            raise StorageError.from_os_error(exc) from exc

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
                if is_blob_key(entry.name) and entry.is_file() and entry.stat().st_mtime < limit
            ]

        try:
            return await to_thread.run_sync(scan)
        except OSError as exc:
            raise StorageError.from_os_error(exc) from exc
