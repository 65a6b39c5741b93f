"""Search in a knowledge base: vector (exact or through the HNSW index), keyword (BM25 over
PostgreSQL's full-text lexemes) or both, their scores scaled and summed with weights; each
statement built once at import."""

from __future__ import annotations

import contextlib
import math
import re
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Select,
    Uuid,
    bindparam,
    column,
    func,
    select,
    text,
    union_all,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from backend.db.session import release_connection
from backend.db.vector import query_vector
from backend.modules.knowledge_base.embeddings import Embedder
from backend.modules.knowledge_base.exceptions import (
    EmbeddingModelChanged,
    SearchTimedOut,
    TooManySearches,
)
from backend.modules.knowledge_base.models import EMBEDDING_DIM, Chunk, KnowledgeBase
from backend.modules.knowledge_base.rerank import Reranker
from backend.modules.knowledge_base.schemas import SearchMode, SearchResult
from backend.modules.knowledge_base.settings import KnowledgeBaseSettings


async def search(
    session: AsyncSession,
    *,
    kb: KnowledgeBase,
    query: str,
    top_k: int,
    mode: SearchMode = "hybrid",
    embedder: Embedder,
    settings: KnowledgeBaseSettings,
    reranker: Reranker | None = None,
) -> Sequence[SearchResult]:
    """The `top_k` chunks of this knowledge base that best answer the query, best first.

    `vector`: nearest by cosine. Small knowledge bases are scanned exactly; large ones use the
    HNSW index with pgvector's iterative scan, which keeps walking the graph until `top_k` rows
    pass the knowledge-base filter instead of returning fewer. `keyword`: BM25 over the chunks
    holding any of the query's words ("quoted phrases", -exclusions and `or` also filter).
    `hybrid`: the vector ranking and the keyword ranking, the first HYBRID_CANDIDATES of each,
    their scores scaled to 0..1 and summed with weights (HYBRID_KEYWORD_WEIGHT for the
    keyword ranking's), in one statement.

    With a reranker, RERANK_CANDIDATES chunks are found that way and the reranker's top_k of
    them returned, scored by it.
    """
    wanted = top_k if reranker is None else max(top_k, settings.rerank_candidates)
    limit = settings.search_concurrency_per_user
    if _running.get(kb.owner_id, 0) >= limit:
        raise TooManySearches(limit)
    _running[kb.owner_id] = _running.get(kb.owner_id, 0) + 1
    try:
        await session.execute(
            SEARCH_TIMEOUT, {"ms": str(int(settings.search_timeout_seconds * 1000))}
        )
        found = await _search(
            session,
            kb=kb,
            query=query,
            top_k=wanted,
            mode=mode,
            embedder=embedder,
            settings=settings,
        )
    except DBAPIError as exc:
        if "different vector dimensions" in str(exc.orig):
            raise EmbeddingModelChanged() from None
        if "statement timeout" in str(exc.orig):
            raise SearchTimedOut(settings.search_timeout_seconds) from None
        raise
    finally:
        with contextlib.suppress(DBAPIError):  # a transaction the error aborted ends anyway
            await session.execute(NO_SEARCH_TIMEOUT)
        _running[kb.owner_id] -= 1
        if not _running[kb.owner_id]:
            del _running[kb.owner_id]
    if reranker is None:
        return found
    await release_connection(session)  # the reranker's round trip needs no connection
    return await reranker.rerank(query, found, top_k)


# Searches running in this process, per owner (SEARCH_CONCURRENCY_PER_USER holds per replica).
_running: dict[uuid.UUID, int] = {}
# The search's statements stop after SEARCH_TIMEOUT_SECONDS; the connection (a read session's,
# autocommit, pooled) gets the server's default back after.
SEARCH_TIMEOUT = text("SELECT set_config('statement_timeout', :ms, false)")
NO_SEARCH_TIMEOUT = text("RESET statement_timeout")


async def _search(
    session: AsyncSession,
    *,
    kb: KnowledgeBase,
    query: str,
    top_k: int,
    mode: SearchMode,
    embedder: Embedder,
    settings: KnowledgeBaseSettings,
) -> Sequence[SearchResult]:
    words = {
        "kb_id": kb.id,
        "query": query,
        "language": settings.search_language,
        "chunks": max(kb.chunk_count, 1),
    }
    if mode == "keyword":
        parameters = words | {"strict": uses_search_syntax(query), "limit": top_k}
        rows = (await session.execute(KEYWORD, parameters)).all()
        return [_result(r, r.score) for r in rows]
    [vector] = await embedder.embed([query], kind="query")
    if mode == "vector":
        return await nearest_chunks(session, kb=kb, vector=vector, top_k=top_k, settings=settings)
    if uses_exact_search(kb, settings):
        statement = EXACT_HYBRID
    else:
        await use_index_settings(session, settings)
        statement = INDEXED_HYBRID
    candidates = max(top_k, HYBRID_CANDIDATES)
    parameters = words | {
        "vector": vector,
        "strict": False,
        "candidates": candidates,
        "limit": candidates,
        "top_k": top_k,
    }
    rows = (await session.execute(statement, parameters)).all()
    return [_result(r, r.score) for r in rows]


def uses_search_syntax(query: str) -> bool:
    """Whether the query asks for more than its words: a "phrase", an -exclusion, or `or`."""
    return '"' in query or re.search(r"(^|\s)-\w|\s(or|OR)\s", query) is not None


# What a search result shows of a chunk: its text and where it came from.
RESULT_COLUMNS = (Chunk.id, Chunk.document_id, Chunk.text, Chunk.page, Chunk.section)


def _result_columns(columns: Any) -> tuple[Any, ...]:
    """RESULT_COLUMNS as a subquery or CTE (`columns`: its `.c`) exposes them."""
    return tuple(columns[column.key] for column in RESULT_COLUMNS)


def _result(row: Any, score: float) -> SearchResult:
    return SearchResult(
        chunk_id=row.id,
        document_id=row.document_id,
        text=row.text,
        page=row.page,
        section=row.section,
        score=score,
    )


def uses_exact_search(kb: KnowledgeBase, settings: KnowledgeBaseSettings) -> bool:
    """Small knowledge bases are scanned exactly; larger ones go through the HNSW index."""
    return kb.chunk_count <= settings.search_exact_max_chunks


def _exact_nearest(limit: str = "top_k") -> Select[Any]:
    # MATERIALIZED: the planner computes every distance in the knowledge base (exact) instead of
    # walking the index and filtering afterwards.
    scoped = (
        select(*RESULT_COLUMNS, Chunk.embedding)
        .where(Chunk.knowledge_base_id == bindparam("kb_id"), Chunk.embedding.is_not(None))
        .cte("scoped")
        .prefix_with("MATERIALIZED")
    )
    distance = scoped.c.embedding.cosine_distance(_QUERY_VECTOR).label("distance")
    return select(*_result_columns(scoped.c), distance).order_by(distance).limit(bindparam(limit))


def _indexed_nearest(limit: str = "top_k") -> Select[Any]:
    distance = Chunk.embedding.cosine_distance(_QUERY_VECTOR).label("distance")
    nearest = (
        select(*RESULT_COLUMNS, distance)
        .where(Chunk.knowledge_base_id == bindparam("kb_id"))
        .order_by(distance)
        .limit(bindparam(limit))
        .subquery()
    )
    # relaxed_order may return rows slightly out of order: sort the final few again.
    return select(nearest).order_by(nearest.c.distance)


# BM25 (Okapi, with Lucene's IDF) over every chunk of the knowledge base holding a query word,
# exact, without reading every posting of the query's common words (MaxScore: Turtle and Flood,
# 1995). The postings are `chunk_terms`, the document frequencies and the lengths' sum
# `keyword_terms` (both kept by triggers on `chunks`). A word adds to a chunk's score
# idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / average length)), less than
# idf * (k1 + 1), its bound. So:
# 1. `threshold`: the chunks the rarest words point to (their postings, up to SEED_POSTINGS)
#    are scored in full, by index lookups; the :limit-th best score is a floor for the answer.
# 2. The weakest words whose bounds add up to less than the floor are `optional`: a chunk
#    holding only those cannot make the answer. The others' postings are read in full.
# 3. The floor is raised with the full scores of the best of those chunks, and every chunk whose
#    score so far, plus the optional words' bounds, still reaches it gets the optional words'
#    scores by index lookups: the best :limit of them are the answer, as if every posting of
#    every word had been read (the tests compare both).
# `:strict`: the query's search-box syntax ("phrases", -exclusions, or) also filters, as
# `websearch_to_tsquery` reads it.
BM25_K1 = 1.2
BM25_B = 0.75
SEED_POSTINGS = 500


def _weight(idf: str, p: str = "p") -> str:
    """A word's share of a chunk's BM25 score, from its idf and its posting `p`."""
    return (
        f"{idf} * {p}.tf * {BM25_K1 + 1} / ({p}.tf + {BM25_K1} "
        f"* ({1 - BM25_B} + {BM25_B} * ({p}.length / kb.average_length)))"
    )


def _lookup(words: str, chunk: str) -> str:
    """The `words`' scores for `chunk`, by index lookups."""
    return f"""coalesce((
        SELECT sum({_weight("w.idf")})
        FROM {words} AS w JOIN chunk_terms AS p ON p.knowledge_base_id = :kb_id
            AND p.lexeme = w.lexeme AND p.chunk_id = {chunk}
    ), 0)"""


_MATCHES = """(NOT :strict OR EXISTS (
    SELECT FROM chunks AS m WHERE m.id = {chunk}
        AND m.search_vector @@ websearch_to_tsquery(CAST(:language AS regconfig), :query)
))"""

BM25 = f"""
WITH kb AS (
    SELECT CAST(coalesce(max(chunks), 1) AS float8) / :chunks AS average_length
    FROM keyword_terms WHERE knowledge_base_id = :kb_id AND lexeme = ''
), terms AS (
    SELECT t.lexeme, ln(1 + (:chunks - CAST(t.chunks AS float8) + 0.5) / (t.chunks + 0.5)) AS idf,
        sum(t.chunks) OVER (ORDER BY t.chunks, t.lexeme) - t.chunks AS rarer_postings
    FROM keyword_terms AS t
    WHERE t.knowledge_base_id = :kb_id AND t.lexeme <> '' AND t.lexeme = ANY (
        tsvector_to_array(to_tsvector(CAST(:language AS regconfig), :query)))
), bounds AS (
    SELECT terms.*, sum(idf) OVER (ORDER BY idf, lexeme) * {BM25_K1 + 1} AS with_weaker
    FROM terms
), seeds AS (
    SELECT p.chunk_id FROM kb, terms AS t JOIN chunk_terms AS p
        ON p.knowledge_base_id = :kb_id AND p.lexeme = t.lexeme
    WHERE t.rarer_postings < {SEED_POSTINGS}
    GROUP BY p.chunk_id
    ORDER BY sum({_weight("t.idf")}) DESC, p.chunk_id
    LIMIT :limit
), threshold AS (
    SELECT coalesce((
        SELECT {_lookup("terms", "s.chunk_id")} AS score FROM kb, seeds AS s
        WHERE {_MATCHES.format(chunk="s.chunk_id")}
        ORDER BY score DESC OFFSET :limit - 1 LIMIT 1
    ), 0) AS score
), optional AS (
    SELECT b.lexeme, b.idf FROM bounds AS b, threshold WHERE b.with_weaker < threshold.score
), partial AS (
    SELECT p.chunk_id, sum({_weight("b.idf")}) AS score
    FROM kb, threshold, bounds AS b JOIN chunk_terms AS p
        ON p.knowledge_base_id = :kb_id AND p.lexeme = b.lexeme
    WHERE b.with_weaker >= threshold.score
    GROUP BY p.chunk_id
), raised AS (
    SELECT greatest(threshold.score, coalesce((
        SELECT c.score + {_lookup("optional", "c.chunk_id")} AS score
        FROM kb, (SELECT * FROM partial ORDER BY score DESC LIMIT 2 * :limit) AS c
        WHERE {_MATCHES.format(chunk="c.chunk_id")}
        ORDER BY score DESC OFFSET :limit - 1 LIMIT 1
    ), 0)) AS score
    FROM threshold
), hopeful AS (
    SELECT partial.* FROM partial, raised
    WHERE partial.score + (SELECT coalesce(sum(idf), 0) * {BM25_K1 + 1} FROM optional)
        >= raised.score
)
SELECT h.chunk_id AS id, h.score + {_lookup("optional", "h.chunk_id")} AS score
FROM kb, hopeful AS h
WHERE {_MATCHES.format(chunk="h.chunk_id")}
ORDER BY score DESC, h.chunk_id
LIMIT :limit
"""


def _keyword() -> Select[Any]:
    """The BM25 ranking's first `:limit` chunks, as search results."""
    ranked = text(BM25).columns(column("id", Uuid), column("score", Float)).subquery("bm25")
    return (
        select(*RESULT_COLUMNS, ranked.c.score)
        .join(ranked, ranked.c.id == Chunk.id)
        .order_by(ranked.c.score.desc(), Chunk.id)
    )


def _normalised(score: ColumnElement[Any]) -> ColumnElement[Any]:
    """`score` scaled to 0..1 over the candidates of its ranking (1 when they all tie)."""
    low, high = func.min(score).over(), func.max(score).over()
    return func.coalesce((score - low) / func.nullif(high - low, 0), 1.0)


def _hybrid(nearest: Select[Any]) -> Select[Any]:
    """The first `candidates` of `nearest` and of the keyword ranking, each one's scores scaled
    to 0..1 over its candidates, summed with weights: HYBRID_KEYWORD_WEIGHT for the keyword
    ranking's, the rest for the vector ranking's (a chunk only one ranking found has 0 from the
    other)."""
    by_vector = nearest.subquery("by_vector")
    by_keyword = _keyword().subquery("by_keyword")
    weighted = union_all(
        select(
            by_vector.c.id,
            ((1 - HYBRID_KEYWORD_WEIGHT) * _normalised(1 - by_vector.c.distance)).label("part"),
        ),
        select(
            by_keyword.c.id,
            (HYBRID_KEYWORD_WEIGHT * _normalised(by_keyword.c.score)).label("part"),
        ),
    ).subquery("weighted")
    fused = (
        select(weighted.c.id, func.sum(weighted.c.part).label("score"))
        .group_by(weighted.c.id)
        .subquery("fused")
    )
    return (
        select(*RESULT_COLUMNS, fused.c.score)
        .join(fused, fused.c.id == Chunk.id)
        .order_by(fused.c.score.desc(), Chunk.id)
        .limit(bindparam("top_k"))
    )


# How deep each ranking is read, and the keyword ranking's share of the fused score: chosen on
# SciFact's train queries (bench.modules.knowledge_base.quality), where a convex sum of scaled
# scores beat reciprocal rank fusion (which fell below the keyword ranking alone) at any depth.
HYBRID_CANDIDATES = 50
HYBRID_KEYWORD_WEIGHT = 0.7

# Built once with bind parameters: building these per request cost more CPU than running them.
_QUERY_VECTOR = query_vector("vector", EMBEDDING_DIM)
EXACT_NEAREST = _exact_nearest()
INDEXED_NEAREST = _indexed_nearest()
KEYWORD = _keyword()
EXACT_HYBRID = _hybrid(_exact_nearest(limit="candidates"))
INDEXED_HYBRID = _hybrid(_indexed_nearest(limit="candidates"))
_INDEX_SETTINGS = "knowledge_base.hnsw_settings"


async def use_index_settings(session: AsyncSession, settings: KnowledgeBaseSettings) -> None:
    """pgvector's HNSW search settings for the next query on this session's connection.

    In a read session (autocommit) they are set for the connection's lifetime, once: the pooled
    connection remembers them (`connection.info`), so a search costs no extra round trip. In a
    transaction they are set for that transaction only (a rollback would undo a lasting one).
    """
    wanted = (settings.search_iterative_scan, str(settings.search_ef_search))
    connection = await session.connection()
    options = (
        connection.sync_connection.get_execution_options() if connection.sync_connection else {}
    )
    lasting = options.get("isolation_level") == "AUTOCOMMIT"
    if lasting and connection.info.get(_INDEX_SETTINGS) == wanted:
        return
    await connection.execute(
        text(
            "SELECT set_config('hnsw.iterative_scan', :scan, :local), "
            "set_config('hnsw.ef_search', :ef, :local)"
        ),
        {"scan": wanted[0], "ef": wanted[1], "local": not lasting},
    )
    if lasting:
        connection.info[_INDEX_SETTINGS] = wanted


async def nearest_chunks(
    session: AsyncSession,
    *,
    kb: KnowledgeBase,
    vector: Sequence[float],
    top_k: int,
    settings: KnowledgeBaseSettings,
) -> Sequence[SearchResult]:
    """The search query itself: the `top_k` chunks of `kb` nearest `vector` (cosine)."""
    if uses_exact_search(kb, settings):
        statement = EXACT_NEAREST
    else:
        await use_index_settings(session, settings)
        statement = INDEXED_NEAREST
    parameters = {"kb_id": kb.id, "vector": vector, "top_k": top_k}
    rows = (await session.execute(statement, parameters)).all()
    # A zero vector (a remote model's answer for nothing) has no cosine: no similarity.
    return [_result(r, 0.0 if math.isnan(r.distance) else 1 - r.distance) for r in rows]
