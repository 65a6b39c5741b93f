from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.modules.file import service
from backend.modules.file.models import File
from backend.modules.file.storage import Storage
from backend.modules.file.upload import clean_filename
from tests.modules.file.fixtures import BOTH_BACKENDS, UPLOAD_LIMIT
from tests.modules.user.factories import user_with_token
from tests.support.kubelet import free_port

FILES = "/api/v1/files"


def blobs(storage_dir: Path) -> list[Path]:
    return [p for p in storage_dir.rglob("*") if p.is_file()] if storage_dir.exists() else []


async def file_rows(session: AsyncSession) -> int:
    return (await session.execute(select(func.count()).select_from(File))).scalar_one()


async def upload(
    client: httpx.AsyncClient, headers: dict[str, str], name: str, data: bytes, ctype: str
) -> httpx.Response:
    return await client.post(FILES, headers=headers, files={"file": (name, data, ctype)})


@BOTH_BACKENDS
async def test_upload_download_list_delete(
    client: httpx.AsyncClient, session: AsyncSession, storage_dir: Path
) -> None:
    _, headers = await user_with_token(client, session)
    data = b"hello, world\n" * 5000

    created = await upload(client, headers, "notes.txt", data, "text/plain")
    assert created.status_code == 201
    body = created.json()
    assert body["filename"] == "notes.txt"
    assert body["content_type"] == "text/plain"
    assert body["size"] == len(data)
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    [blob] = blobs(storage_dir)
    assert blob.read_bytes() == data
    assert "notes" not in blob.name  # stored under a generated key

    content = await client.get(f"{FILES}/{body['id']}/content", headers=headers)
    assert content.status_code == 200
    assert content.content == data
    assert content.headers["content-type"].startswith("text/plain")
    assert content.headers["content-disposition"].startswith('attachment; filename="notes.txt"')

    assert (await client.get(f"{FILES}/{body['id']}", headers=headers)).json() == body
    listed = await client.get(FILES, headers=headers)
    assert [f["id"] for f in listed.json()["items"]] == [body["id"]]

    deleted = await client.delete(f"{FILES}/{body['id']}", headers=headers)
    assert deleted.status_code == 204
    assert blobs(storage_dir) == []
    assert (await client.get(f"{FILES}/{body['id']}", headers=headers)).status_code == 404


async def test_listing_is_paginated(client: httpx.AsyncClient, session: AsyncSession) -> None:
    _, headers = await user_with_token(client, session)
    ids = [
        (await upload(client, headers, f"f{i}.txt", b"x", "text/plain")).json()["id"]
        for i in range(3)
    ]
    first = (await client.get(FILES, headers=headers, params={"limit": 2})).json()
    second = (await client.get(FILES, headers=headers, params={"limit": 2, "offset": 2})).json()
    # Pages are disjoint and cover everything (in one test transaction created_at ties).
    paged = [f["id"] for f in first["items"] + second["items"]]
    assert sorted(paged) == sorted(ids)
    assert len(first["items"]) == 2
    assert (first["has_more"], second["has_more"]) == (True, False)
    bad = await client.get(FILES, headers=headers, params={"limit": 0})
    assert bad.status_code == 422


@BOTH_BACKENDS
async def test_too_large_upload_is_refused_while_streaming_and_leaves_nothing(
    client: httpx.AsyncClient, session: AsyncSession, storage_dir: Path
) -> None:
    _, headers = await user_with_token(client, session)
    sent = 0
    total = UPLOAD_LIMIT * 50
    boundary = "b0undary"

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"'
            f"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        yield head.encode()
        piece = b"\0" * 65536
        while sent < total:
            sent += len(piece)
            yield piece
        yield f"\r\n--{boundary}--\r\n".encode()

    # Chunked (no Content-Length), so only counting while streaming can stop it.
    response = await client.post(
        FILES,
        headers={**headers, "content-type": f"multipart/form-data; boundary={boundary}"},
        content=body(),
    )
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]
    assert sent < UPLOAD_LIMIT * 2  # stopped reading soon after the limit, not at the end
    assert blobs(storage_dir) == []
    assert await file_rows(session) == 0


@BOTH_BACKENDS
async def test_declared_oversize_is_refused_before_reading(
    client: httpx.AsyncClient, session: AsyncSession, storage_dir: Path
) -> None:
    _, headers = await user_with_token(client, session)
    response = await upload(client, headers, "big.bin", b"\0" * (UPLOAD_LIMIT * 2), "x/y")
    assert response.status_code == 413
    assert blobs(storage_dir) == []


@BOTH_BACKENDS
async def test_client_filenames_never_become_paths(
    client: httpx.AsyncClient, session: AsyncSession, storage_dir: Path
) -> None:
    _, headers = await user_with_token(client, session)
    created = await upload(client, headers, "..\\..\\etc/pässwd.txt", b"x", "text/plain")
    assert created.status_code == 201
    assert created.json()["filename"] == "pässwd.txt"
    [blob] = blobs(storage_dir)
    assert blob.is_relative_to(storage_dir)

    content = await client.get(f"{FILES}/{created.json()['id']}/content", headers=headers)
    disposition = content.headers["content-disposition"]
    assert disposition == ("attachment; filename=\"p_sswd.txt\"; filename*=UTF-8''p%C3%A4sswd.txt")


async def test_bad_uploads_are_400(client: httpx.AsyncClient, session: AsyncSession) -> None:
    _, headers = await user_with_token(client, session)
    not_multipart = await client.post(FILES, headers=headers, json={"file": "x"})
    wrong_field = await client.post(FILES, headers=headers, files={"other": ("a", b"x")})
    assert not_multipart.status_code == wrong_field.status_code == 400
    unauthenticated = await client.post(FILES, files={"file": ("a", b"x")})
    assert unauthenticated.status_code == 401


@BOTH_BACKENDS
async def test_other_users_files_do_not_exist_for_you(
    client: httpx.AsyncClient, session: AsyncSession, storage_dir: Path
) -> None:
    _, alice = await user_with_token(client, session)
    _, bob = await user_with_token(client, session)
    file_id = (await upload(client, alice, "a.txt", b"secret", "text/plain")).json()["id"]

    for method, path in (
        ("GET", f"{FILES}/{file_id}"),
        ("GET", f"{FILES}/{file_id}/content"),
        ("DELETE", f"{FILES}/{file_id}"),
    ):
        response = await client.request(method, path, headers=bob)
        assert response.status_code == 404, path
    assert (await client.get(FILES, headers=bob)).json()["items"] == []
    assert len(blobs(storage_dir)) == 1
    malformed = await client.get(f"{FILES}/not-a-uuid", headers=bob)
    assert malformed.status_code == 422


@BOTH_BACKENDS
async def test_cleanup_removes_blobs_a_crash_left_without_rows(
    client: httpx.AsyncClient, session: AsyncSession, storage_dir: Path, storage: Storage
) -> None:
    _, headers = await user_with_token(client, session)
    kept = await upload(client, headers, "kept.txt", b"kept", "text/plain")
    assert kept.status_code == 201

    async def stream() -> AsyncIterator[bytes]:
        yield b"orphan"

    # A blob whose row never committed (the process died between the two).
    orphan = await storage.save(stream(), max_size=100)

    removed = await service.cleanup_orphans(session, storage=storage, older_than=timedelta(0))

    assert removed == [orphan.key]
    [left] = blobs(storage_dir)
    assert left.read_bytes() == b"kept"


def test_filename_cleaning() -> None:
    assert clean_filename("../../etc/passwd") == "passwd"
    assert clean_filename("C:\\Users\\x\\report.pdf") == "report.pdf"
    assert clean_filename("bad\x00name\r\n.txt") == "badname.txt"
    assert clean_filename("..") == "upload"
    assert clean_filename("a" * 300 + ".txt") == "a" * 255


@pytest.mark.parametrize("storage_backend", ["s3"], indirect=True)
@pytest.mark.settings(s3_presigned_downloads=True)
async def test_s3_downloads_can_redirect_to_a_presigned_url(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    _, headers = await user_with_token(client, session)
    created = await upload(client, headers, "report ü.pdf", b"%PDF-1.7 bytes", "application/pdf")
    assert created.status_code == 201

    content = await client.get(f"{FILES}/{created.json()['id']}/content", headers=headers)

    assert content.status_code == 307
    async with httpx.AsyncClient() as outside:  # the client follows it to the bucket itself
        fetched = await outside.get(content.headers["location"])
    assert fetched.status_code == 200
    assert fetched.content == b"%PDF-1.7 bytes"
    assert fetched.headers["content-type"] == "application/pdf"
    assert fetched.headers["content-disposition"] == (
        "attachment; filename=\"report _.pdf\"; filename*=UTF-8''report%20%C3%BC.pdf"
    )


@pytest.mark.parametrize("storage_backend", ["s3"], indirect=True)
@pytest.mark.settings(s3_endpoint_url=f"http://127.0.0.1:{free_port()}")
async def test_an_unreachable_bucket_is_503_and_keeps_no_row(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    _, headers = await user_with_token(client, session)
    response = await upload(client, headers, "a.txt", b"data", "text/plain")
    assert response.status_code == 503
    assert "storage" in response.json()["detail"].lower()
    assert await file_rows(session) == 0


@BOTH_BACKENDS
async def test_a_blob_that_cannot_be_read_is_503_before_any_byte(
    client: httpx.AsyncClient, session: AsyncSession, storage_dir: Path
) -> None:
    """The storage is asked for the blob before the response starts: a failure is a clear 503,
    not a 200 cut short."""
    _, headers = await user_with_token(client, session)
    file_id = (await upload(client, headers, "a.txt", b"data", "text/plain")).json()["id"]
    [blob] = blobs(storage_dir)
    blob.unlink()  # a disk or bucket that lost it, or cannot be reached

    response = await client.get(f"{FILES}/{file_id}/content", headers=headers)

    assert response.status_code == 503
    assert response.json()["detail"] == "File storage could not be read. Retry shortly."
