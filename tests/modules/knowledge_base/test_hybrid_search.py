"""Keyword and hybrid search through HTTP: BM25 in PostgreSQL, summed with the vector
ranking (scores scaled and weighted) in one statement, inside one knowledge base."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.state import app_state
from backend.modules.knowledge_base.models import Chunk
from backend.modules.knowledge_base.search import HYBRID_CANDIDATES, HYBRID_KEYWORD_WEIGHT
from backend.modules.knowledge_base.settings import KnowledgeBaseSettings
from tests.modules.knowledge_base.test_knowledge_base import KBS, add_text, make_kb
from tests.modules.user.factories import user_with_token

DOCUMENTS = {
    "deploy": "Roll out the new release with kubectl; the init container runs the migrations.",
    "errors": "Error E4471 means the pool timed out: raise DB_POOL_SIZE or shorten requests.",
    "pasta": "Boil the spaghetti for nine minutes and serve it with garlic and parmesan.",
    "moons": "Jupiter's moons Io, Europa, Ganymede and Callisto orbit the largest planet.",
    "backup": "Nightly backups of the database are kept for thirty days in another region.",
    "tokens": "Access tokens expire after an hour; a password change revokes every one.",
}


async def search(
    client: httpx.AsyncClient, headers: dict[str, str], kb: str, query: str, **more: Any
) -> list[dict[str, Any]]:
    response = await client.post(
        f"{KBS}/{kb}/search", headers=headers, json={"query": query, **more}
    )
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


@pytest.fixture
async def corpus(
    client: httpx.AsyncClient, session: AsyncSession
) -> tuple[dict[str, str], str, dict[str, str]]:
    """A knowledge base of DOCUMENTS (ids by name), and another with the same texts."""
    _, headers = await user_with_token(client, session)
    kb, other = await make_kb(client, headers, "kb"), await make_kb(client, headers, "other")
    ids = {}
    for name, body in DOCUMENTS.items():
        ids[name] = (await add_text(client, headers, kb, name, body)).json()["id"]
        await add_text(client, headers, other, name, body)
    return headers, kb, ids


async def test_keyword_search_stems_parses_web_syntax_and_stays_in_its_knowledge_base(
    client: httpx.AsyncClient, corpus: tuple[dict[str, str], str, dict[str, str]]
) -> None:
    headers, kb, ids = corpus
    by_id = {v: k for k, v in ids.items()}

    def names(results: list[dict[str, Any]]) -> list[str]:
        return [by_id[r["document_id"]] for r in results]  # KeyError: the other kb's document

    # English stemming: "migration" finds "migrations", "expired" finds "expire".
    assert names(await search(client, headers, kb, "migration", mode="keyword")) == ["deploy"]
    assert names(await search(client, headers, kb, "expired tokens", mode="keyword")) == ["tokens"]
    # An identifier no embedding knows, found as a word.
    assert names(await search(client, headers, kb, "e4471", mode="keyword")) == ["errors"]
    # websearch syntax: OR, -exclusion, "phrases".
    either = await search(client, headers, kb, "spaghetti or backups", mode="keyword")
    assert sorted(names(either)) == ["backup", "pasta"]
    assert names(await search(client, headers, kb, "database -backups", mode="keyword")) == []
    phrase = await search(client, headers, kb, '"largest planet"', mode="keyword")
    assert names(phrase) == ["moons"]
    assert await search(client, headers, kb, '"planet largest"', mode="keyword") == []
    # Only stop words: no keyword hits, and hybrid falls back to the vector ranking.
    assert await search(client, headers, kb, "the and of", mode="keyword") == []
    assert len(await search(client, headers, kb, "the and of", top_k=3)) == 3
    scores = [r["score"] for r in either]
    assert scores == sorted(scores, reverse=True)
    assert all(score > 0 for score in scores)


async def test_keyword_search_ranks_a_question_by_its_informative_words(
    client: httpx.AsyncClient,
    corpus: tuple[dict[str, str], str, dict[str, str]],
    session: AsyncSession,
) -> None:
    """BM25: the answer need not hold every word of the question, and a word that many chunks
    hold weighs less than one few hold."""
    headers, kb, ids = corpus
    by_id = {v: k for k, v in ids.items()}
    question = "Which planet in our solar system has the moons Europa and Ganymede?"
    found = await search(client, headers, kb, question, mode="keyword")
    assert [by_id[r["document_id"]] for r in found] == ["moons"]  # "solar" is in no chunk
    # "database" is in one chunk; "nightly" too, but added five more times it is common.
    for n in range(5):
        await add_text(client, headers, kb, f"note {n}", f"The nightly job {n} finished.")
    ranked = await search(client, headers, kb, "nightly database", mode="keyword")
    assert by_id[ranked[0]["document_id"]] == "backup"  # holds both
    scores = {by_id.get(r["document_id"], "note"): r["score"] for r in ranked}
    assert scores["note"] < scores["backup"]

    # The postings follow the chunks: a new language re-indexes them, a deletion removes them.
    postings = "SELECT count(*) FROM chunk_terms WHERE knowledge_base_id = :kb AND lexeme = :w"
    assert await session.scalar(text(postings), {"kb": kb, "w": "the"}) == 0  # a stop word
    await session.execute(
        text("UPDATE chunks SET language = 'simple' WHERE knowledge_base_id = :kb"), {"kb": kb}
    )
    assert await session.scalar(text(postings), {"kb": kb, "w": "the"}) > 0
    await client.delete(f"{KBS}/{kb}/documents/{ids['moons']}", headers=headers)
    assert await session.scalar(text(postings), {"kb": kb, "w": "ganymede"}) == 0


def scaled(results: list[dict[str, Any]], weight: float) -> dict[str, float]:
    """Each result's score scaled to 0..1 over the list, times `weight`."""
    scores = [r["score"] for r in results]
    low, high = min(scores), max(scores)
    return {
        r["chunk_id"]: weight * ((r["score"] - low) / (high - low) if high > low else 1.0)
        for r in results
    }


async def test_hybrid_sums_both_rankings_scaled_and_weighted(
    client: httpx.AsyncClient,
    corpus: tuple[dict[str, str], str, dict[str, str]],
    app: FastAPI,
) -> None:
    headers, kb, _ = corpus
    for exact in (True, False):  # a small knowledge base's exact scan, then the HNSW path
        settings = app_state(app).get(KnowledgeBaseSettings)
        settings.search_exact_max_chunks = 10_000 if exact else 0
        for query in ("database pool timed", "jupiter moons", "release roll"):
            deep = HYBRID_CANDIDATES
            vector = await search(client, headers, kb, query, top_k=deep, mode="vector")
            keyword = await search(client, headers, kb, query, top_k=deep, mode="keyword")
            assert len(vector) == len(DOCUMENTS)  # only this knowledge base's chunks
            assert keyword
            fused = scaled(vector, 1 - HYBRID_KEYWORD_WEIGHT)
            for chunk, part in scaled(keyword, HYBRID_KEYWORD_WEIGHT).items():
                fused[chunk] = fused.get(chunk, 0.0) + part
            expected = sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:4]

            hybrid = await search(client, headers, kb, query, top_k=4)

            assert [r["chunk_id"] for r in hybrid] == [chunk for chunk, _ in expected], query
            assert [r["score"] for r in hybrid] == pytest.approx([s for _, s in expected])
            # The keyword ranking's best, found by both, leads.
            assert hybrid[0]["chunk_id"] == keyword[0]["chunk_id"]


async def test_chunks_are_indexed_in_the_configured_language(
    client: httpx.AsyncClient, session: AsyncSession, app: FastAPI
) -> None:
    _, headers = await user_with_token(client, session)
    kb = await make_kb(client, headers)
    app_state(app).get(KnowledgeBaseSettings).search_language = "german"
    await add_text(client, headers, kb, "de", "Die Datenbanken werden nachts gesichert.")

    language = await session.scalar(select(Chunk.language))
    assert language == "german"
    # German stemming: "Datenbank" finds "Datenbanken".
    found = await search(client, headers, kb, "Datenbank", mode="keyword")
    assert len(found) == 1


async def test_a_bad_mode_is_422(
    client: httpx.AsyncClient, corpus: tuple[dict[str, str], str, dict[str, str]]
) -> None:
    headers, kb, _ = corpus
    response = await client.post(
        f"{KBS}/{kb}/search", headers=headers, json={"query": "x", "mode": "semantic"}
    )
    assert response.status_code == 422
    assert "mode" in response.text
