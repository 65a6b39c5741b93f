"""Vector search: latency and recall@10 of the app's own search query on clustered synthetic data.

Two data sets, each in its own database migrated by the real `alembic upgrade head`:
- single: N chunks in one knowledge base;
- multi: 100 knowledge bases of N/100 chunks plus one large one of N/2, in one table and one
  HNSW index, as a multi-tenant deployment has them. They all draw from the same topics (as
  tenants writing about the same things do), so most of a query's nearest chunks in the table
  lie in other knowledge bases and the knowledge-base filter has to skip them: the report gives
  that share for each probe.
Chunks are loaded with COPY, then the migration's HNSW index is rebuilt (timed, sized). Queries go
through `backend.modules.knowledge_base.search.nearest_chunks`, the query the search endpoint
runs; recall@10 is against exact cosine neighbours computed with numpy.
"""

from __future__ import annotations

import statistics
import time
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np
from pgvector.asyncpg import register_vector
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from backend.modules.knowledge_base.models import EMBEDDING_DIM, KnowledgeBase
from backend.modules.knowledge_base.search import nearest_chunks, uses_exact_search
from backend.modules.knowledge_base.settings import KnowledgeBaseSettings
from bench.db import alembic_upgrade, dsn, scratch_database

K = 10


@dataclass(frozen=True)
class VectorSize:
    chunks: int  # the single knowledge base; the multi set has 100 x chunks/100 + chunks/2
    small_kbs: int
    queries: int
    exact_max_chunks: int  # the app's SEARCH_EXACT_MAX_CHUNKS for this run
    ef_search: tuple[int, ...]


TINY = VectorSize(chunks=2_000, small_kbs=10, queries=20, exact_max_chunks=100, ef_search=(40, 100))
FULL = VectorSize(
    chunks=100_000,
    small_kbs=100,
    queries=200,
    exact_max_chunks=10_000,
    ef_search=(40, 100, 150, 200),
)
SIZES = {"tiny": TINY, "quick": TINY, "full": FULL}  # by the bench's size


def centres_for(rng: np.random.Generator, n: int) -> np.ndarray:
    """One random unit centre per 500 chunks (at least 4)."""
    centres = rng.standard_normal((max(4, n // 500), EMBEDDING_DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return centres


def clustered(rng: np.random.Generator, n: int, centres: np.ndarray) -> np.ndarray:
    """Unit vectors around the centres (cosine to their centre about 0.85)."""
    clusters = len(centres)
    noise = rng.standard_normal((n, EMBEDDING_DIM)).astype(np.float32) * (0.6 / EMBEDDING_DIM**0.5)
    points: np.ndarray = centres[rng.integers(0, clusters, n)] + noise
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points


def exact_neighbours(data: np.ndarray, queries: np.ndarray) -> np.ndarray:
    scores = queries @ data.T
    top: np.ndarray = np.argpartition(-scores, K, axis=1)[:, :K]
    return top


async def load(url: URL, kbs: list[KnowledgeBaseData]) -> dict[str, Any]:
    """Rows for one owner, its knowledge bases and documents; chunks by COPY; index rebuilt."""
    connection = await asyncpg.connect(dsn(url))
    try:
        await register_vector(connection)
        owner = uuid.uuid4()
        await connection.execute(
            "INSERT INTO users (id, email, username, hashed_password) VALUES ($1, $2, $3, 'x')",
            owner,
            f"{owner}@example.com",
            owner.hex[:20],
        )
        for kb in kbs:
            await connection.execute(
                "INSERT INTO knowledge_bases (id, owner_id, name, chunk_count) "
                "VALUES ($1, $2, 'bench', $3)",
                kb.id,
                owner,
                len(kb.vectors),
            )
            await connection.execute(
                "INSERT INTO documents (id, knowledge_base_id, title, chunk_count, char_count) "
                "VALUES ($1, $1, 'bench', $2, 0)",
                kb.id,
                len(kb.vectors),
            )
        indexdef = await connection.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_chunks_embedding_hnsw'"
        )
        await connection.execute("DROP INDEX ix_chunks_embedding_hnsw")
        for kb in kbs:
            await connection.copy_records_to_table(
                "chunks",
                records=[
                    (chunk_id, kb.id, kb.id, n, "chunk", vector)
                    for n, (chunk_id, vector) in enumerate(
                        zip(kb.chunk_ids, kb.vectors, strict=True)
                    )
                ],
                columns=["id", "document_id", "knowledge_base_id", "ordinal", "text", "embedding"],
            )
        await connection.execute("ANALYZE chunks")
        await connection.execute("SET maintenance_work_mem = '1GB'")
        started = time.perf_counter()
        await connection.execute(indexdef)
        build_seconds = time.perf_counter() - started
        index_bytes = await connection.fetchval(
            "SELECT pg_relation_size('ix_chunks_embedding_hnsw')"
        )
        rows = await connection.fetchval("SELECT count(*) FROM chunks")
    finally:
        await connection.close()
    return {"rows": rows, "build_s": build_seconds, "index_mb": index_bytes / 1024 / 1024}


def outside_share(
    kb: KnowledgeBaseData, table: list[KnowledgeBaseData], queries: np.ndarray
) -> float:
    """The share of each query's K nearest chunks in the whole table that lie outside `kb`:
    0 means the filter never has to skip anything."""
    everything = np.concatenate([other.vectors for other in table])
    inside = np.concatenate([np.full(len(other.vectors), other is kb) for other in table])
    nearest = exact_neighbours(everything, queries)
    return float(1 - inside[nearest].mean())


async def measure(
    url: URL, data: KnowledgeBaseData, queries: np.ndarray, settings: KnowledgeBaseSettings
) -> dict[str, Any]:
    """p50/p99 of the app's search query and its recall@10, one session per query."""
    engine = create_async_engine(url, pool_size=1)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    truth = exact_neighbours(data.vectors, queries)
    latencies, recalls = [], []
    try:
        async with sessions() as session:
            kb = await session.get(KnowledgeBase, data.id)
            assert kb is not None
            session.expunge(kb)
        for _ in range(2):  # warm the pool and the buffer cache
            async with sessions() as session:
                await nearest_chunks(
                    session, kb=kb, vector=queries[0].tolist(), top_k=K, settings=settings
                )
        for query, expected in zip(queries, truth, strict=True):
            vector = query.tolist()
            started = time.perf_counter()
            async with sessions() as session:
                found = await nearest_chunks(
                    session, kb=kb, vector=vector, top_k=K, settings=settings
                )
            latencies.append((time.perf_counter() - started) * 1000)
            expected_ids = {data.chunk_ids[i] for i in expected}
            recalls.append(len(expected_ids & {r.chunk_id for r in found}) / K)
    finally:
        await engine.dispose()
    latencies.sort()
    return {
        "kb_chunks": len(data.vectors),
        "path": "exact" if uses_exact_search(kb, settings) else "hnsw",
        "ef_search": settings.search_ef_search,
        "iterative_scan": settings.search_iterative_scan,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "recall": statistics.mean(recalls),
    }


@dataclass
class KnowledgeBaseData:
    id: uuid.UUID
    centres: np.ndarray
    vectors: np.ndarray
    chunk_ids: list[uuid.UUID]


def kb_of(rng: np.random.Generator, n: int, centres: np.ndarray | None = None) -> KnowledgeBaseData:
    """`n` chunks around `centres` (topics of its own when None)."""
    centres = centres_for(rng, n) if centres is None else centres
    return KnowledgeBaseData(
        uuid.uuid4(), centres, clustered(rng, n, centres), [uuid.uuid4() for _ in range(n)]
    )


def settings_to_try(size: VectorSize, chunks: int) -> list[KnowledgeBaseSettings]:
    """Exact search has no knobs; HNSW is tried at every ef_search, iterative scan on and off."""
    if chunks <= size.exact_max_chunks:
        return [KnowledgeBaseSettings(search_exact_max_chunks=size.exact_max_chunks)]
    return [
        KnowledgeBaseSettings(
            search_exact_max_chunks=size.exact_max_chunks,
            search_ef_search=ef,
            search_iterative_scan=scan,
        )
        for ef in size.ef_search
        for scan in ("relaxed_order", "off")
    ]


async def run(server: URL, size: VectorSize) -> dict[str, Any]:
    rng = np.random.default_rng(42)
    production = KnowledgeBaseSettings()
    results: dict[str, Any] = {
        "size": size.__dict__,
        "dimension": EMBEDDING_DIM,
        "defaults": {
            "ef_search": production.search_ef_search,
            "iterative_scan": production.search_iterative_scan,
        },
        "sets": {},
    }

    single = kb_of(rng, size.chunks)
    # Shared topics: a query's neighbours are spread over every knowledge base.
    topics = centres_for(rng, size.chunks // 2)
    small = [kb_of(rng, size.chunks // size.small_kbs, topics) for _ in range(size.small_kbs)]
    large = kb_of(rng, size.chunks // 2, topics)
    for name, kbs, probes in (
        ("single", [single], [single]),
        ("multi", [*small, large], [small[0], large]),
    ):
        async with scratch_database(server, f"bench_vectors_{name}") as url:
            alembic_upgrade(url)
            loaded = await load(url, kbs)
            print(f"  {name}: {loaded}", flush=True)
            measurements = []
            for kb in probes:
                # Queries drawn from the knowledge base's own distribution (not points in it).
                queries = clustered(rng, size.queries, kb.centres)
                outside = outside_share(kb, kbs, queries)
                for settings in settings_to_try(size, len(kb.vectors)):
                    measured = await measure(url, kb, queries, settings)
                    measurements.append({**measured, "neighbours_outside_kb": outside})
                    print(f"    {measurements[-1]}", flush=True)
        results["sets"][name] = {**loaded, "measurements": measurements}
    return results
