"""The storage contract, held by both backends: a local directory and an S3 bucket (a real
S3-compatible server, `rclone serve s3`, that keeps objects as files a test can look at)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import obstore
import pytest

from backend.modules.file.s3 import PART_SIZE, S3Storage
from backend.modules.file.settings import FileSettings
from backend.modules.file.storage import (
    LocalStorage,
    Storage,
    StorageError,
    TooLarge,
    new_key,
)
from tests.support.files import files_in
from tests.support.kubelet import free_port
from tests.support.s3 import S3Server

LATER = datetime.now(UTC) + timedelta(days=1)  # every blob is older than this
EARLIER = datetime.now(UTC) - timedelta(days=1)  # and none older than this


def s3_storage(server: S3Server, prefix: str, **settings: object) -> S3Storage:
    return S3Storage.from_settings(
        FileSettings.model_validate(
            {
                "storage_backend": "s3",
                "s3_bucket": server.bucket,
                "s3_endpoint_url": server.endpoint,
                "s3_prefix": prefix,
                **settings,
            }
        )
    )


@pytest.fixture
def credentials(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in s3.credentials.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Storage, Path]:
    """A storage and the folder on disk where its blobs land."""
    if request.param == "local":
        return LocalStorage(tmp_path / "files"), tmp_path / "files"
    server: S3Server = request.getfixturevalue("s3")
    request.getfixturevalue("credentials")
    return s3_storage(server, tmp_path.name), server.folder(tmp_path.name)


class ClientGone(Exception):
    pass


async def stream(
    data: bytes, *, piece: int = 65536, fail_after: int | None = None
) -> AsyncIterator[bytes]:
    """`data` as a request body arrives: in pieces, optionally failing part way."""
    for start in range(0, len(data), piece):
        if fail_after is not None and start >= fail_after:
            raise ClientGone()
        yield data[start : start + piece]


async def read(storage: Storage, key: str) -> bytes:
    return b"".join([chunk async for chunk in await storage.open(key)])


# One PUT below a part, a multipart upload above it.
SIZES = [0, 10, PART_SIZE * 2 + 12345]


@pytest.mark.parametrize("size", SIZES)
async def test_a_saved_blob_reads_back_and_is_deleted(
    backend: tuple[Storage, Path], size: int
) -> None:
    storage, folder = backend
    data = hashlib.sha256(b"seed").digest() * (size // 32) + b"x" * (size % 32)

    blob = await storage.save(stream(data), max_size=size)

    assert (blob.size, blob.sha256) == (size, hashlib.sha256(data).hexdigest())
    assert await read(storage, blob.key) == data
    [on_disk] = files_in(folder)
    assert on_disk.read_bytes() == data
    assert on_disk.name == blob.key
    assert await storage.keys_older_than(LATER) == [blob.key]
    assert await storage.keys_older_than(EARLIER) == []

    await storage.delete(blob.key)
    await storage.delete(blob.key)  # deletes are retried: a missing blob is no error
    assert files_in(folder) == []
    assert await storage.keys_older_than(LATER) == []


@pytest.mark.parametrize("size", [1000, PART_SIZE * 3])
async def test_too_large_keeps_nothing(backend: tuple[Storage, Path], size: int) -> None:
    storage, folder = backend
    with pytest.raises(TooLarge):
        await storage.save(stream(b"\1" * size), max_size=size - 1)
    assert files_in(folder) == []
    assert await storage.keys_older_than(LATER) == []


@pytest.mark.parametrize("fail_after", [65536, PART_SIZE * 2])
async def test_a_stream_that_fails_keeps_nothing(
    backend: tuple[Storage, Path], fail_after: int
) -> None:
    """A client that goes away mid-upload: its error comes through, no blob or part is kept."""
    storage, folder = backend
    with pytest.raises(ClientGone):
        await storage.save(stream(b"\2" * PART_SIZE * 3, fail_after=fail_after), max_size=10**9)
    assert files_in(folder) == []
    assert await storage.keys_older_than(LATER) == []


async def test_only_blob_keys_are_cleanup_candidates(
    backend: tuple[Storage, Path], s3: S3Server
) -> None:
    """A bucket or folder shared with other things: cleanup never lists what is not ours."""
    storage, folder = backend
    blob = await storage.save(stream(b"ours"), max_size=100)
    if isinstance(storage, S3Storage):
        await obstore.put_async(storage.store, "README.txt", b"not ours")
    else:
        (folder / "README.txt").write_bytes(b"not ours")
    assert await storage.keys_older_than(LATER) == [blob.key]


async def test_an_unreachable_store_is_a_storage_error(
    tmp_path: Path, s3: S3Server, credentials: None
) -> None:
    (tmp_path / "a-file").write_text("")
    down = s3_storage(S3Server(endpoint=f"http://127.0.0.1:{free_port()}", root=tmp_path), "p")
    for storage in (LocalStorage(tmp_path / "a-file" / "files"), down):
        with pytest.raises(StorageError):
            await storage.save(stream(b"data"), max_size=100)
        with pytest.raises(StorageError):  # at open, before any byte is promised
            await storage.open(new_key())


async def test_presigned_download_serves_the_blob_with_its_headers(
    s3: S3Server, credentials: None, tmp_path: Path
) -> None:
    storage = s3_storage(s3, tmp_path.name, s3_presigned_downloads=True, s3_presign_seconds=60)
    headers = {"Content-Type": "text/plain", "Content-Disposition": 'attachment; filename="a.txt"'}
    blob = await storage.save(stream(b"hello"), max_size=100, headers=headers)

    url = await storage.download_url(blob.key)

    assert url is not None
    assert "X-Amz-Signature=" in url
    assert "X-Amz-Expires=60" in url
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
        assert response.status_code == 200
        assert response.content == b"hello"
        assert response.headers["content-disposition"] == headers["Content-Disposition"]
        assert response.headers["content-type"] == "text/plain"
        tampered = await http.get(url.replace("X-Amz-Expires=60", "X-Amz-Expires=6000"))
        assert tampered.status_code == 403
    assert await LocalStorage(tmp_path).download_url(blob.key) is None
    assert await s3_storage(s3, tmp_path.name).download_url(blob.key) is None  # off by default


def test_s3_needs_a_bucket() -> None:
    with pytest.raises(ValueError, match="STORAGE_BACKEND=s3 needs S3_BUCKET"):
        FileSettings(storage_backend="s3")
