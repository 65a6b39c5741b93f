"""Changing the embedding model while the API serves: the README's two releases, for real.

Release 1's revision adds the new model's column; `reembed` (a real process, with the new
model's settings) fills it while the old app keeps answering searches with the old vectors;
release 2's revision swaps the columns. The new model here is WordLlama cut to 128 dimensions.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine

from backend.core.config import PROJECT_ROOT
from backend.db import vector_columns
from backend.main import create_app
from backend.modules.knowledge_base.embeddings import WordLlamaEmbedder
from backend.modules.knowledge_base.models import EMBEDDING_DIM
from backend.modules.knowledge_base.reembed import reembed as reembed_chunks
from tests.modules.knowledge_base.test_knowledge_base import PARAPHRASES, QUESTIONS, best_documents
from tests.support import db
from tests.support.settings import configured

pytestmark = pytest.mark.slow

API = "/api/v1"
FILLER = 400  # documents besides the paraphrases: enough for reembed to take a while


async def run_revision(url: URL, step: Callable[..., None], *args: Any) -> None:
    """What a revision's upgrade() does, on a connection of its own."""

    def run(connection: Connection) -> None:
        context = MigrationContext.configure(connection)
        with context.begin_transaction(), Operations.context(context):
            step(*args)

    await db.run_sync(url, run)


@pytest.fixture
async def client(migrated_db: URL, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The app of release 1: the default model, searching `embedding`."""
    app = create_app(*configured(database_url=db.sync_url(migrated_db), file_storage_dir=tmp_path))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url=f"http://t{API}") as http,
    ):
        yield http


REEMBED = [sys.executable, "-m", "backend.modules.knowledge_base.reembed", "--batch-size", "8"]


def reembed_env(url: URL, dimension: int) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": db.sync_url(url),
        "EMBEDDING_PROVIDER": "wordllama",
        "EMBEDDING_DIM": str(dimension),
    }


def reembed(url: URL, dimension: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        REEMBED,
        cwd=PROJECT_ROOT,
        env=reembed_env(url, dimension),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def reembed_process(url: URL, dimension: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *REEMBED,
        cwd=PROJECT_ROOT,
        env=reembed_env(url, dimension),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def until_ready(
    client: httpx.AsyncClient, headers: dict[str, str], kb: str, count: int
) -> None:
    """Until the app's own worker (in-process, the default) has stored all `count` documents'
    chunks (one each)."""
    deadline = asyncio.get_running_loop().time() + 120
    while (await client.get(f"/knowledge-bases/{kb}", headers=headers)).json()[
        "chunk_count"
    ] < count:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.2)


async def test_the_old_vectors_serve_until_the_new_ones_are_complete(
    client: httpx.AsyncClient, migrated_db: URL
) -> None:
    account = {"email": "m@example.com", "username": "model", "password": "horse battery"}
    assert (await client.post("/auth/register", json=account)).status_code == 201
    login = await client.post(
        "/auth/token", data={"username": "model", "password": "horse battery"}
    )
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    kb = (await client.post("/knowledge-bases", headers=headers, json={"name": "kb"})).json()["id"]
    documents = f"/knowledge-bases/{kb}/documents"
    added = []
    for title, text in PARAPHRASES.items():
        document = {"title": title, "text": text}
        added.append(await client.post(documents, headers=headers, json=document))
    for n in range(FILLER):
        filler = {"title": f"filler {n}", "text": f"Inventory record {n}: {n * 7} crates of bolts."}
        added.append(await client.post(documents, headers=headers, json=filler))
    assert {response.status_code for response in added} == {202}
    await until_ready(client, headers, kb, len(added))

    search = f"/knowledge-bases/{kb}/search"
    before = await best_documents(client, headers, search)

    # Release 1's revision, then reembed with the new model while release 1 serves.
    await run_revision(migrated_db, vector_columns.add_next_column, "chunks", 128)
    process = await reembed_process(migrated_db, 128)
    assert process.stdout is not None
    output = (await process.stdout.readline()).decode()  # it has begun
    late = {"title": "late", "text": "Added while the vectors were being remade."}
    assert (await client.post(documents, headers=headers, json=late)).status_code == 202
    searched_while_running = 0
    while process.returncode is None:
        assert (
            await best_documents(client, headers, search) == before
        )  # the old vectors, the old model: same answers
        searched_while_running += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), 0.05)
    output += (await process.stdout.read()).decode()
    assert process.returncode == 0, output
    assert searched_while_running >= 2, output  # the searches really overlapped the run
    await until_ready(client, headers, kb, len(added) + 1)
    chunks = len(PARAPHRASES) + FILLER + 1
    assert f"{chunks} chunks embedded into embedding_next" in output
    missing = await db.fetch_all(
        migrated_db, "SELECT count(*) FROM chunks WHERE embedding_next IS NULL"
    )
    assert missing == [(0,)]

    # Release 2's revision: the new column takes the old one's place.
    await run_revision(migrated_db, vector_columns.swap_next_column, "chunks")
    columns = await db.fetch_all(
        migrated_db,
        "SELECT attname, atttypmod FROM pg_attribute WHERE attrelid = 'chunks'::regclass "
        "AND attname LIKE 'embedding%' AND NOT attisdropped",
    )
    assert columns == [("embedding", 128)]
    indexes = await db.fetch_all(
        migrated_db, "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_chunks_embedding_hnsw'"
    )
    assert "hnsw (embedding vector_cosine_ops)" in str(indexes[0][0])

    # A replica of release 1 still running answers 503, not a server error.
    response = await client.post(
        f"/knowledge-bases/{kb}/search",
        headers=headers,
        json={"query": "bread", "top_k": 1, "mode": "vector"},
    )
    assert response.status_code == 503
    assert "embedding model is being changed" in response.json()["detail"]

    # The vectors are the new model's, and its query vectors find the passages by meaning.
    embedder = WordLlamaEmbedder(128)
    rows = await db.fetch_all(
        migrated_db,
        "SELECT text, embedding::real[] FROM chunks WHERE text = ANY(:texts)",
        texts=list(PARAPHRASES.values()),
    )
    made = await embedder.embed([str(text) for text, _ in rows])
    assert len(rows) == len(PARAPHRASES)
    assert all(np.allclose(v, m, atol=1e-6) for (_, v), m in zip(rows, made, strict=True))  # type: ignore[arg-type]
    for question, title in QUESTIONS.items():
        [vector] = await embedder.embed([question], kind="query")
        nearest = await db.fetch_all(
            migrated_db,
            # Exact (`+ 0` keeps the HNSW index out): the eight passages, not the graph's nearest.
            "SELECT d.title FROM chunks c JOIN documents d ON d.id = c.document_id "
            "WHERE d.title = ANY(:titles) "
            "ORDER BY (c.embedding <=> CAST(:v AS vector)) + 0 LIMIT 1",
            titles=list(PARAPHRASES),
            v=str(vector),
        )
        assert nearest == [(title,)], question

    # Nothing left to do: a second run says so and succeeds.
    again = reembed(migrated_db, 128)
    output, _ = await asyncio.to_thread(again.communicate, None, 60)
    assert again.returncode == 0, output
    assert "0 chunks embedded into embedding" in output


async def test_reembed_refuses_a_model_of_another_dimension(migrated_db: URL) -> None:
    process = reembed(migrated_db, 64)
    output, _ = await asyncio.to_thread(process.communicate, None, 60)
    assert process.returncode == 1
    assert "EMBEDDING_DIM is 64 but chunks.embedding holds vector(256)" in output


async def test_reembed_does_not_wait_for_queued_documents_outside_a_model_change(
    migrated_db: URL,
) -> None:
    """`python3 dev.py serve` runs reembed before serving: a document left queued by the last
    session (no worker runs yet) must not hold the start-up up."""
    await db.execute(
        migrated_db,
        "INSERT INTO users (id, email, username, hashed_password) "
        "VALUES ('00000000-0000-0000-0000-000000000001', 'q@example.com', 'queued', 'x')",
        "INSERT INTO knowledge_bases (id, owner_id, name) VALUES "
        "('00000000-0000-0000-0000-000000000002', '00000000-0000-0000-0000-000000000001', 'kb')",
        "INSERT INTO documents (id, knowledge_base_id, title, chunk_count, char_count, "
        "pending_text) VALUES ('00000000-0000-0000-0000-000000000003', "
        "'00000000-0000-0000-0000-000000000002', 't', 0, 0, 'queued text')",
    )
    engine = create_async_engine(migrated_db)
    try:
        progress = await asyncio.wait_for(
            reembed_chunks(engine, WordLlamaEmbedder(EMBEDDING_DIM)), timeout=30
        )
    finally:
        await engine.dispose()
    assert (progress.column, progress.embedded) == ("embedding", 0)
