"""Document ingestion: chunks/s from the request to `ready`, where the time goes, and how it
scales with worker processes."""

from __future__ import annotations

import asyncio
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
from bench.db import alembic_upgrade, dsn, scratch_database
from bench.modules.knowledge_base.data import markdown, wait_until_ingested
from bench.processes import Server, start_server
from bench.seed import Seed
from bench.sizes import Size

# Documents queued at once for the worker processes to share.
DOCUMENTS_PER_RUN = 4


async def worker_scaling(server: URL, env: dict[str, str], size: Size) -> list[dict[str, Any]]:
    """Large documents (DOCUMENTS_PER_RUN of `size.document_mb`) queued at once and ingested by
    `size.ingestion_workers` worker processes (1, 2, 4), each run on a fresh database: chunks/s
    from the commit that queues them to the last one `ready`. The workers start (and load
    their model) first."""
    text = markdown(int(size.document_mb * 1024 * 1024))
    rows = []
    for workers in size.ingestion_workers:
        async with scratch_database(server, f"bench_workers_{workers}") as url:
            alembic_upgrade(url)
            worker_env = env | {
                "DATABASE_URL": dsn(url),
                "INGESTION_CONCURRENCY": "1",
                "INGESTION_POLL_SECONDS": "0.05",
            }
            running = [
                start_server("backend.worker:worker_app", worker_env, "/healthz", factory=True)
                for _ in range(workers)
            ]
            try:
                connection = await asyncpg.connect(dsn(url))
                try:
                    seconds = await _queue_and_wait(connection, text)
                    chunks = await connection.fetchval("SELECT count(*) FROM chunks")
                finally:
                    await connection.close()
            finally:
                for worker in running:
                    worker.stop()
        rows.append(
            {
                "workers": workers,
                "documents": DOCUMENTS_PER_RUN,
                "chunks": chunks,
                "seconds": seconds,
                "chunks_per_s": chunks / seconds,
            }
        )
    return rows


async def _queue_and_wait(connection: asyncpg.Connection, text: str, poll: float = 0.05) -> float:
    """DOCUMENTS_PER_RUN documents of `text` queued in one transaction (an owner and a
    knowledge base made for them); seconds until none is left to process."""
    user, kb = uuid.uuid4(), uuid.uuid4()
    async with connection.transaction():
        await connection.execute(
            "INSERT INTO users (id, email, username, hashed_password) "
            "VALUES ($1, 'workers@example.com', 'workers', 'x')",
            user,
        )
        await connection.execute(
            "INSERT INTO knowledge_bases (id, owner_id, name) VALUES ($1, $2, 'workers')", kb, user
        )
        await connection.executemany(
            "INSERT INTO documents (id, knowledge_base_id, title, pending_text, status, "
            "chunk_count, char_count) VALUES ($1, $2, $3, $4, 'pending', 0, $5)",
            [(uuid.uuid4(), kb, f"d{n}", text, len(text)) for n in range(DOCUMENTS_PER_RUN)],
        )
    started = time.perf_counter()
    left = "SELECT count(*) FROM documents WHERE status IN ('pending', 'processing')"
    while await connection.fetchval(left):  # noqa: ASYNC110 (the workers' state, in SQL)
        await asyncio.sleep(poll)
    return time.perf_counter() - started


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
