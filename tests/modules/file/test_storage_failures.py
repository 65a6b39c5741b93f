"""A file storage that refuses or goes away, as an operator meets it: a real API process in
front of a real S3-compatible server (`rclone serve s3`) that is misconfigured or stopped."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import URL

from tests.modules.user.factories import account_at
from tests.support.kubelet import free_port
from tests.support.s3 import S3Server, s3_server
from tests.support.server import uvicorn_process

pytestmark = [pytest.mark.slow]

API = "/api/v1"


def s3_settings(server: S3Server, **overrides: str) -> dict[str, str]:
    return {
        "STORAGE_BACKEND": "s3",
        "S3_BUCKET": server.bucket,
        "S3_ENDPOINT_URL": server.endpoint,
        **server.credentials,
        **overrides,
    }


async def test_a_wrong_secret_is_logged_with_its_cause_and_fails_readiness(
    migrated_db: URL, tmp_path: Path
) -> None:
    with s3_server(tmp_path / "s3") as server:
        settings = s3_settings(server, AWS_SECRET_ACCESS_KEY="not-the-secret")
        async with uvicorn_process(migrated_db, tmp_path / "files", **settings) as (base, _):
            auth = await account_at(base, "signer")
            async with httpx.AsyncClient(base_url=base) as client:
                upload = await client.post(
                    f"{API}/files", headers=auth, files={"file": ("a.txt", b"data")}
                )
                ready = await client.get("/readyz")
        log = (tmp_path / f"uvicorn-{base.rsplit(':', 1)[1]}.log").read_text()

    assert upload.status_code == 503
    assert upload.json()["code"] == "storage_unavailable"
    assert "SignatureDoesNotMatch" not in upload.text  # the client is told nothing internal
    assert "could not keep an upload" in log
    assert "SignatureDoesNotMatch" in log  # the operator is told why
    assert ready.status_code == 503
    reason = ready.json()["reason"]
    assert reason.startswith("file storage: object store:"), reason
    assert "SignatureDoesNotMatch" in reason


async def test_a_blob_left_by_a_delete_while_the_store_is_down_is_cleaned_up_after(
    migrated_db: URL, tmp_path: Path
) -> None:
    root, port = tmp_path / "s3", free_port()
    with contextlib.ExitStack() as running:
        server = running.enter_context(s3_server(root, port))
        settings = s3_settings(
            server,
            FILE_CLEANUP_SECONDS="1",
            FILE_ORPHAN_MIN_AGE_SECONDS="1",
            S3_TIMEOUT_SECONDS="2",
        )
        blobs = root / server.bucket
        async with uvicorn_process(migrated_db, tmp_path / "files", **settings) as (base, _):
            auth = await account_at(base, "deleter")
            async with httpx.AsyncClient(base_url=f"{base}{API}", timeout=60) as client:
                created = await client.post("/files", headers=auth, files={"file": ("a", b"data")})
                assert created.status_code == 201, created.text
                [blob] = [path for path in blobs.rglob("*") if path.is_file()]
                file = f"/files/{created.json()['id']}"

                running.close()  # the store goes down
                deleted = await client.delete(file, headers=auth)
                gone = await client.get(file, headers=auth)
                down = await client.get(f"{base}/readyz")
                assert blob.exists()

                with s3_server(root, port):  # and comes back
                    async with asyncio.timeout(30):
                        while blob.exists():  # noqa: ASYNC110 (a file, not an event)
                            await asyncio.sleep(0.2)
                    up = await client.get(f"{base}/readyz")
        log = (tmp_path / f"uvicorn-{base.rsplit(':', 1)[1]}.log").read_text()

    assert deleted.status_code == 204
    assert gone.status_code == 404
    assert down.status_code == 503
    assert down.json()["reason"].startswith("file storage: object store:")
    assert f"could not delete blob {blob.name}" in log
    assert "left their blob in storage" in log
    assert "orphan cleanup removes them" in log
    assert up.status_code == 200
