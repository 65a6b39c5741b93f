"""Uploads and downloads (MB/s, server memory) and document ingestion (chunks/s)."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np
from pgvector.asyncpg import register_vector
from sqlalchemy.engine import URL

from backend.modules.knowledge_base.chunking import split_text
from backend.modules.knowledge_base.embeddings import create_embedder
from backend.modules.knowledge_base.settings import KnowledgeBaseSettings
from bench.db import dsn
from bench.processes import Server, peak_rss, start_server
from bench.seed import Seed, markdown, wait_until_ingested
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
    headers = {"Authorization": f"Bearer {seed.token}"}
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


def ingestion(app: Server, seed: Seed, size: Size) -> dict[str, Any]:
    text = markdown(int(size.document_mb * 1024 * 1024))
    headers = {"Authorization": f"Bearer {seed.token}"}
    with httpx.Client(base_url=app.base_url, timeout=600, headers=headers) as client:
        kb = client.post("/api/v1/knowledge-bases", json={"name": "ingestion"})
        kb.raise_for_status()
        upload = client.post(
            "/api/v1/files", files={"file": ("book.md", text.encode(), "text/markdown")}
        )
        upload.raise_for_status()
        # From the request to `ready`: the API queues it, the (in-process) worker ingests it.
        started = time.perf_counter()
        queued = client.post(
            f"/api/v1/knowledge-bases/{kb.json()['id']}/documents",
            json={"file_id": upload.json()["id"]},
        )
        queued.raise_for_status()
        wait_until_ingested(client, queued.headers["location"])
        seconds = time.perf_counter() - started
        chunks = client.get(queued.headers["location"]).json()["chunk_count"]
    return {
        "document_mb": len(text) / 1024 / 1024,
        "chunks": chunks,
        "seconds": seconds,
        "chunks_per_s": chunks / seconds,
    }


async def index_cost(url: URL, rows: int) -> dict[str, float]:
    """Where ingestion time goes: embedding `rows` real chunks (the bench's markdown, cut as the
    app does), and writing them by COPY, with and without the HNSW index. Random vectors would
    not do: they insert several times slower into the graph than embeddings of real text.

    Each in a transaction that is rolled back, so the database is left as it was.
    """
    defaults = KnowledgeBaseSettings()
    text = markdown(rows * defaults.chunk_size)
    texts = split_text(text, size=defaults.chunk_size, overlap=defaults.chunk_overlap)[:rows]
    embedder = create_embedder(defaults)
    started = time.perf_counter()
    vectors = np.array(await embedder.embed(texts), dtype=np.float32)
    seconds = {"embedding_s": time.perf_counter() - started}
    connection = await asyncpg.connect(dsn(url))
    try:
        await register_vector(connection)
        kb, document = await connection.fetchrow(
            "SELECT knowledge_base_id, id FROM documents LIMIT 1"
        )
        records = [
            (uuid.uuid4(), document, kb, n, text, vector)
            for n, (text, vector) in enumerate(zip(texts, vectors, strict=True))
        ]
        columns = ["id", "document_id", "knowledge_base_id", "ordinal", "text", "embedding"]
        for label, drop in (("with_index_s", False), ("without_index_s", True)):
            transaction = connection.transaction()
            await transaction.start()
            if drop:
                await connection.execute("DROP INDEX ix_chunks_embedding_hnsw")
            started = time.perf_counter()
            await connection.copy_records_to_table("chunks", records=records, columns=columns)
            seconds[label] = time.perf_counter() - started
            await transaction.rollback()
    finally:
        await connection.close()
    return seconds
