"""Blobs in an S3-compatible bucket (AWS S3, GCS's S3 API, MinIO, R2), through obstore.

obstore (Rust's `object_store`, the crate DataFusion and Polars use) was chosen over aioboto3:
one 15 MB wheel with no botocore version pins, streaming multipart uploads that are aborted when
the stream fails, presigned URLs, and the AWS credential chain (environment, web identity as
IRSA gives it, EKS Pod Identity, instance metadata) built in. The bench measures its MB/s.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import obstore
from obstore.exceptions import BaseError
from obstore.store import S3Store

if TYPE_CHECKING:
    from obstore import GetResult

from backend.modules.file.settings import FileSettings
from backend.modules.file.storage import (
    Measured,
    StorageError,
    StoredBlob,
    is_blob_key,
    new_key,
    valid_key,
)

# S3's smallest part is 5 MiB. An upload holds at most (PARTS_IN_FLIGHT + 1) parts in memory.
PART_SIZE = 5 * 1024 * 1024
PARTS_IN_FLIGHT = 2


# Listed by the readiness check; never a blob key (those are 32 hex digits).
READINESS_PREFIX = "readyz-probe/"
# The S3 error's own code and message in the body obstore quotes (SignatureDoesNotMatch, ...).
_S3_ERROR = re.compile(r"<Code>([^<]{1,100})</Code>\s*<Message>([^<]{0,300})</Message>")


def cause(exc: BaseException) -> str:
    """One line saying why the store refused: obstore's first line, and S3's error code."""
    text = str(exc)
    line = text.split("\n", 1)[0].strip()
    line = re.sub(r" - Server returned non-2xx status code: (\d+ [A-Za-z ]+):.*", r": \1", line)
    found = _S3_ERROR.search(text)
    if found:
        line += f" ({found[1]}: {found[2].strip()})"
    return f"object store: {line}"


class S3Storage:
    """Blobs as objects named by generated keys, under the bucket's optional prefix."""

    def __init__(self, store: S3Store, *, presign_for: timedelta | None = None) -> None:
        self.store = store
        self.presign_for = presign_for

    @classmethod
    def from_settings(cls, settings: FileSettings) -> S3Storage:
        """The bucket the settings name; credentials come from the environment (AWS_*) or the
        platform's workload identity, never from these settings."""
        endpoint = settings.s3_endpoint_url
        store = S3Store(
            settings.s3_bucket,
            prefix=settings.s3_prefix or None,
            config={
                **({"endpoint": endpoint} if endpoint else {}),
                **({"region": settings.s3_region} if settings.s3_region else {}),
            },
            client_options={
                "allow_http": bool(endpoint and endpoint.startswith("http://")),
                "connect_timeout": timedelta(seconds=5),
                "timeout": timedelta(seconds=settings.s3_timeout_seconds),
            },
            # A bucket that is down fails the request in seconds, not after 3 minutes of retries.
            retry_config={"max_retries": 3, "retry_timeout": timedelta(seconds=15)},
        )
        presign = timedelta(seconds=settings.s3_presign_seconds)
        return cls(store, presign_for=presign if settings.s3_presigned_downloads else None)

    async def save(
        self,
        chunks: AsyncIterator[bytes],
        *,
        max_size: int,
        headers: Mapping[str, str] | None = None,
    ) -> StoredBlob:
        blob = Measured(new_key(), chunks, max_size)
        key, stream = blob.key, aiter(blob)
        attributes = dict(headers or {})
        try:
            first = bytearray()
            async for chunk in stream:
                first += chunk
                if len(first) >= PART_SIZE:
                    break
            else:
                # The whole upload fits in one part: one PUT instead of a three-request multipart.
                await obstore.put_async(
                    self.store, key, first, attributes=attributes, use_multipart=False
                )
                return blob.stored()
            # obstore aborts the multipart upload when the stream raises (too large, a client
            # gone); a cancelled task leaves its parts to the bucket's lifecycle rule.
            await obstore.put_async(
                self.store,
                key,
                _chained(bytes(first), stream),
                attributes=attributes,
                chunk_size=PART_SIZE,
                max_concurrency=PARTS_IN_FLIGHT,
            )
        except (BaseError, OSError) as exc:
            raise StorageError(f"object store: {exc}".splitlines()[0]) from exc
        return blob.stored()

    async def open(self, key: str, *, chunk_size: int = 1024 * 1024) -> AsyncIterator[bytes]:
        try:
            result = await obstore.get_async(self.store, valid_key(key))
        except (BaseError, OSError) as exc:  # a missing object included (FileNotFoundError)
            raise StorageError(f"object store: {exc}".splitlines()[0]) from exc
        return _stream(result, chunk_size)

    async def download_url(self, key: str) -> str | None:
        if self.presign_for is None:
            return None
        return await obstore.sign_async(self.store, "GET", valid_key(key), self.presign_for)

    async def delete(self, key: str) -> None:
        try:
            await obstore.delete_async(self.store, valid_key(key))
        except FileNotFoundError:
            pass  # some stores answer 404 for a missing object: not an error here
        except (BaseError, OSError) as exc:
            raise StorageError(cause(exc)) from exc

    async def check(self) -> None:
        # A listing under a prefix no blob has: one request that a wrong key, a missing bucket
        # or a store that is down all fail (a HEAD of a missing object would pass on the last).
        try:
            await obstore.list_with_delimiter_async(self.store, prefix=READINESS_PREFIX)
        except (BaseError, OSError) as exc:
            raise StorageError(cause(exc)) from exc

    async def keys_older_than(self, cutoff: datetime) -> list[str]:
        keys = []
        try:
            async for batch in obstore.list(self.store, chunk_size=1000):
                keys += [
                    meta["path"]
                    for meta in batch
                    if is_blob_key(meta["path"]) and meta["last_modified"] < cutoff
                ]
        except (BaseError, OSError) as exc:
            raise StorageError(cause(exc)) from exc
        return keys


async def _stream(result: GetResult, chunk_size: int) -> AsyncIterator[bytes]:
    async for chunk in result.stream(min_chunk_size=chunk_size):
        yield bytes(chunk)


async def _chained(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk
