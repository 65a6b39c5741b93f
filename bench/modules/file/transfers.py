"""Uploads and downloads: MB/s and the server's memory, on the local disk and on S3."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx

from bench.processes import Server, peak_rss, start_server
from bench.seed import Seed
from bench.sizes import Size
from tests.support.s3 import s3_server


def transfers_s3(env: dict[str, str], seed: Seed, size: Size, workdir: Path) -> dict[str, Any]:
    """The same transfers with STORAGE_BACKEND=s3: a second app on a real S3 server
    (`rclone serve s3`, on loopback, keeping objects as files), with the same database."""
    with s3_server(workdir / "s3" / "data") as s3:
        bucket = {"STORAGE_BACKEND": "s3", "S3_BUCKET": s3.bucket, "S3_ENDPOINT_URL": s3.endpoint}
        app = start_server("backend.main:app", env | s3.credentials | bucket, "/readyz")
        try:
            return transfers(app, seed, size, workdir)
        finally:
            app.stop()


def transfers(app: Server, seed: Seed, size: Size, workdir: Path) -> dict[str, Any]:
    total = size.upload_mb * 1024 * 1024
    source = workdir / "big.bin"
    with source.open("wb") as out:
        block = os.urandom(1024 * 1024)
        for _ in range(size.upload_mb):
            out.write(block)
    headers = seed.auth
    with httpx.Client(base_url=app.base_url, timeout=300, headers=headers) as client:
        with peak_rss(app) as upload_memory, source.open("rb") as stream:
            started = time.perf_counter()
            response = client.post("/api/v1/files", files={"file": ("big.bin", stream)})
            upload_seconds = time.perf_counter() - started
        response.raise_for_status()
        file_id = response.json()["id"]
        received = 0
        with peak_rss(app) as download_memory:
            started = time.perf_counter()
            with client.stream("GET", f"/api/v1/files/{file_id}/content") as download:
                for piece in download.iter_raw(1024 * 1024):
                    received += len(piece)
            download_seconds = time.perf_counter() - started
        assert received == total, f"downloaded {received} of {total} bytes"
    source.unlink()
    mib = total / 1024 / 1024
    return {
        "size_mb": size.upload_mb,
        "upload_mb_s": mib / upload_seconds,
        "download_mb_s": mib / download_seconds,
        "upload_peak_growth_mb": (upload_memory["peak"] - upload_memory["before"]) / 1024 / 1024,
        "download_peak_growth_mb": (download_memory["peak"] - download_memory["before"])
        / 1024
        / 1024,
    }
