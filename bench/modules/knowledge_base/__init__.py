"""The knowledge-base module's part of the bench: searches against the baseline (exact, and
through the HNSW index), searches and new documents in the mixed load, ingestion's speed, and
vector search's speed and recall (vectors.py). Retrieval quality on a labelled set is its own
command: `python -m bench.modules.knowledge_base.quality` (quality.py)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import Any

import httpx
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backend.modules.knowledge_base.embeddings import create_embedder
from backend.modules.knowledge_base.settings import KnowledgeBaseSettings
from bench import raw
from bench.load import Endpoint
from bench.modules import Context, Weighted
from bench.modules.knowledge_base import vectors
from bench.modules.knowledge_base.data import knowledge_base, markdown
from bench.modules.knowledge_base.ingestion import index_cost, ingestion, worker_scaling
from bench.processes import LOAD_CORE, MULTI_CORE, SERVER_CORE
from bench.seed import Seed
from bench.sizes import Size

SECTIONS = ("ingestion", "vectors")

# The app and the baseline run with this, so the large knowledge base takes the index path.
EXACT_MAX_CHUNKS = 1000
SEARCH = "POST /api/v1/knowledge-bases/{id}/search"
QUERIES = [
    "rollback a migration on a replica",
    "how do I deploy a schema upgrade",
    "vector index search settings",
    "database replica rollback",
    "upgrade the deploy pipeline",
]


def app_env(size: Size, workdir: Path) -> dict[str, str]:
    return {
        "MAX_DOCUMENT_BYTES": str(int((size.document_mb + 1) * 1024 * 1024)),
        "MAX_DOCUMENT_CHARS": str(int((size.document_mb + 1) * 1024 * 1024)),
        "SEARCH_EXACT_MAX_CHUNKS": str(EXACT_MAX_CHUNKS),  # the baseline reads it too
        # One bench user stands for many clients: the per-user limits would measure themselves.
        "SEARCH_CONCURRENCY_PER_USER": "100",
        "MAX_QUEUED_DOCUMENTS_PER_USER": "1000000",
        "MAX_DOCUMENTS_PER_USER": "1000000",
        "MAX_CHUNKS_PER_USER": "100000000",
    }


def seed(client: httpx.Client, size: Size) -> dict[str, Any]:
    kb, kb_chunks = knowledge_base(client, "handbook", [markdown(30_000)])
    large, large_chunks = knowledge_base(
        client, "archive", [markdown(800_000, seed=n) for n in range(size.large_documents)]
    )
    return {
        "kb_id": kb,
        "kb_chunks": kb_chunks,
        "large_kb_id": large,
        "large_kb_chunks": large_chunks,
    }


def endpoints(seed: Seed) -> list[Endpoint]:
    mine = seed.data["knowledge_base"]
    headers = {**seed.auth, "Content-Type": "application/json"}
    # Vector search, as the baseline runs it (hybrid, the default, adds a keyword ranking).
    query = '{"query": "rollback a migration on a replica", "top_k": 5, "mode": "vector"}'
    return [
        Endpoint(
            f"{SEARCH} ({path}, {mine[chunks]:,} chunks)",
            "POST",
            f"/api/v1/knowledge-bases/{mine[kb]}/search",
            headers,
            query,
        )
        for path, kb, chunks in (
            ("exact", "kb_id", "kb_chunks"),
            ("HNSW index", "large_kb_id", "large_kb_chunks"),
        )
    ]


KB = "SELECT * FROM knowledge_bases WHERE id = $1 AND owner_id = $2"
EXACT = (
    "WITH scoped AS MATERIALIZED (SELECT id, document_id, text, embedding FROM chunks "
    "WHERE knowledge_base_id = $1) "
    "SELECT id, document_id, text, embedding <=> $2 AS distance FROM scoped "
    "ORDER BY distance LIMIT $3"
)
# Above EXACT_MAX_CHUNKS, as the app does: the HNSW index, with pgvector's settings set once per
# connection (bench/baseline.py's init_connection).
INDEXED = (
    "SELECT * FROM (SELECT id, document_id, text, embedding <=> $2 AS distance FROM chunks "
    "WHERE knowledge_base_id = $1 ORDER BY distance LIMIT $3) AS nearest ORDER BY distance"
)
BASELINE_EXACT_MAX_CHUNKS = int(os.environ.get("SEARCH_EXACT_MAX_CHUNKS", "10000"))
EMBEDDER = create_embedder(KnowledgeBaseSettings())  # the app's default model, same work


async def search(request: Request) -> Response:
    body = orjson.loads(await request.body())
    kb_id = uuid.UUID(request.path_params["kb_id"])
    async with raw.Pool.pool.acquire() as connection:
        user = await raw.user_for(request, connection)
        if user is None:
            return raw.UNAUTHORISED
        kb = await connection.fetchrow(KB, kb_id, user["id"])
        if kb is None:
            return raw.json({"detail": "Knowledge base not found"}, 404)
        [vector] = await EMBEDDER.embed([body["query"]])
        query = EXACT if kb["chunk_count"] <= BASELINE_EXACT_MAX_CHUNKS else INDEXED
        rows = await connection.fetch(query, kb_id, vector, body.get("top_k", 5))
    results = [
        {
            "chunk_id": r["id"],
            "document_id": r["document_id"],
            "text": r["text"],
            "score": 1 - r["distance"],
        }
        for r in rows
    ]
    return raw.json({"results": results})


def baseline_routes() -> list[Route]:
    return [Route("/api/v1/knowledge-bases/{kb_id}/search", search, methods=["POST"])]


def mix(seed: Seed) -> list[Weighted]:
    mine = seed.data["knowledge_base"]
    headers = {**seed.auth, "Content-Type": "application/json"}
    counter = itertools.count()

    def searching(kb: str, name: str) -> Endpoint:
        body = {"query": random.choice(QUERIES), "top_k": 5}
        path = f"/api/v1/knowledge-bases/{kb}/search"
        return Endpoint(name, "POST", path, headers, json.dumps(body))

    def document() -> Endpoint:
        n = next(counter)
        text = " ".join(random.choice(QUERIES) for _ in range(60)) + f" (note {n})"
        body = json.dumps({"title": f"note {n}", "text": text})
        path = f"/api/v1/knowledge-bases/{mine['kb_id']}/documents"
        return Endpoint("POST .../documents (~4 kB)", "POST", path, headers, body)

    return [
        (25, lambda: searching(mine["kb_id"], "POST .../search (exact)")),
        (10, lambda: searching(mine["large_kb_id"], "POST .../search (HNSW)")),
        (5, document),
    ]


def measure(context: Context, sections: Collection[str]) -> dict[str, Any]:
    c, out = context, {}
    if "ingestion" in sections:
        print("ingestion", flush=True)
        out["ingestion"] = ingestion(c.app, c.seed, c.size)
        out["ingestion"] |= asyncio.run(index_cost(c.database, out["ingestion"]["chunks"]))
        out["ingestion"]["workers"] = asyncio.run(worker_scaling(c.server, c.env, c.size))
    if "vectors" in sections:
        print("vector search", flush=True)
        if MULTI_CORE:
            os.sched_setaffinity(0, {int(SERVER_CORE)})
        try:
            out["vectors"] = asyncio.run(vectors.run(c.server, vectors.SIZES[c.size.name]))
        finally:
            if MULTI_CORE:
                os.sched_setaffinity(0, {int(LOAD_CORE)})
    return out
