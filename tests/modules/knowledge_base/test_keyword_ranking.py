"""Keyword search skips most postings of a query's common words (MaxScore, search.py) and
reads document frequencies from `keyword_terms` (kept by triggers): held here to the BM25
ranking that reads every posting and counts everything itself, on SciFact's abstracts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from backend.modules.knowledge_base.search import BM25_B, BM25_K1
from bench.modules.knowledge_base.quality import load_beir
from tests.modules.knowledge_base.test_bench_quality import SCIFACT
from tests.modules.knowledge_base.test_hybrid_search import search
from tests.modules.knowledge_base.test_knowledge_base import KBS, add_text, make_kb
from tests.modules.user.factories import user_with_token

# BM25 as the textbook has it: every posting of every query word read, each word's document
# frequency and the average length counted from the chunks themselves.
EVERY_POSTING = text(f"""
WITH terms AS (
    SELECT DISTINCT unnest(tsvector_to_array(to_tsvector('english', :query))) AS lexeme
), postings AS (
    SELECT p.* FROM chunk_terms AS p JOIN terms USING (lexeme)
    WHERE p.knowledge_base_id = :kb
), df AS (
    SELECT lexeme, count(*) AS n FROM postings GROUP BY lexeme
), kb AS (
    SELECT count(*) AS chunks, avg(length(search_vector)) AS average_length
    FROM chunks WHERE knowledge_base_id = :kb
)
SELECT p.chunk_id, sum(
    ln(1 + (kb.chunks - df.n + 0.5) / (df.n + 0.5)) * p.tf * {BM25_K1 + 1}
    / (p.tf + {BM25_K1} * (1 - {BM25_B} + {BM25_B} * p.length / kb.average_length))
) AS score
FROM postings AS p JOIN df USING (lexeme), kb
GROUP BY p.chunk_id
ORDER BY score DESC, p.chunk_id
LIMIT :limit
""")

# What `keyword_terms` must hold for a knowledge base, counted from its chunks.
COUNTED = text("""
SELECT t.lexeme, count(*) AS chunks
FROM chunks AS c, unnest(c.search_vector) AS t WHERE c.knowledge_base_id = :kb GROUP BY t.lexeme
UNION ALL
SELECT '', sum(length(search_vector)) AS chunks
FROM chunks WHERE knowledge_base_id = :kb HAVING count(*) > 0
""")
KEPT = text("SELECT lexeme, chunks FROM keyword_terms WHERE knowledge_base_id = :kb")


async def statistics(session: AsyncSession, kb: str) -> tuple[dict[str, int], dict[str, int]]:
    """The knowledge base's keyword statistics as kept, and as counted from its chunks."""
    kept = {row.lexeme: row.chunks for row in await session.execute(KEPT, {"kb": kb})}
    counted = {row.lexeme: row.chunks for row in await session.execute(COUNTED, {"kb": kb})}
    return kept, counted


def same_ranking(found: list[dict[str, Any]], reference: Sequence[Any]) -> None:
    """Same scores in the same order; the same chunks wherever scores are not tied."""
    scores = [round(float(r.score), 6) for r in reference]
    assert [round(r["score"], 6) for r in found] == scores
    times = Counter(scores)
    for mine, theirs, score in zip(found, reference, scores, strict=True):
        if times[score] == 1:
            assert mine["chunk_id"] == str(theirs.chunk_id)


@pytest.mark.skipif(not SCIFACT.is_dir(), reason=f"no SciFact at {SCIFACT}")
async def test_keyword_ranking_is_bm25_over_every_posting(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    dataset = load_beir(SCIFACT, queries=30)
    abstracts = list(dataset.corpus.values())[:400]
    _, headers = await user_with_token(client, session)
    kb = await make_kb(client, headers)
    # One document, one section per abstract: several hundred chunks in one ingestion.
    body = "\n\n".join(f"# {title}\n\n{abstract}" for title, abstract in abstracts)
    assert (await add_text(client, headers, kb, "abstracts", body)).json()["status"] == "ready"
    kept, counted = await statistics(session, kb)
    assert kept == counted

    for query in dataset.queries.values():
        for top_k in (5, 50):
            found = await search(client, headers, kb, query, mode="keyword", top_k=top_k)
            reference = await session.execute(
                EVERY_POSTING, {"query": query, "kb": kb, "limit": top_k}
            )
            same_ranking(found, reference.all())


async def test_keyword_statistics_follow_the_chunks(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    """Added, re-indexed in a new language, deleted with a document, deleted with the
    knowledge base: `keyword_terms` always says what the chunks hold."""
    _, headers = await user_with_token(client, session)
    kb = await make_kb(client, headers)
    first = await add_text(client, headers, kb, "a", "The nightly backup of the database.")
    await add_text(client, headers, kb, "b", "A database pool timed out during the backup.")
    kept, counted = await statistics(session, kb)
    assert kept == counted
    assert ("the" not in kept, kept["databas"]) == (True, 2)

    await session.execute(
        text("UPDATE chunks SET language = 'simple' WHERE knowledge_base_id = :kb"), {"kb": kb}
    )
    kept, counted = await statistics(session, kb)
    assert kept == counted
    assert ("databas" not in kept, kept["the"]) == (True, 2)

    await client.delete(f"{KBS}/{kb}/documents/{first.json()['id']}", headers=headers)
    kept, counted = await statistics(session, kb)
    assert kept == counted
    assert ("nightly" not in kept, kept["database"]) == (True, 1)

    assert (await client.delete(f"{KBS}/{kb}", headers=headers)).status_code == 204
    assert await statistics(session, kb) == ({}, {})
