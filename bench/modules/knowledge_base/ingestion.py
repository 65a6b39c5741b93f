"""Document ingestion: chunks/s from the request to `ready`, and where the time goes."""

from __future__ import annotations

import time
import uuid
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
from bench.modules.knowledge_base.data import markdown, wait_until_ingested
from bench.processes import Server
from bench.seed import Seed
from bench.sizes import Size


def ingestion(app: Server, seed: Seed, size: Size) -> dict[str, Any]:
    text = markdown(int(size.document_mb * 1024 * 1024))
    headers = seed.auth
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
