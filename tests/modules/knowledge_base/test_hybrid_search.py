"""Keyword and hybrid search through HTTP: full-text in PostgreSQL, fused with the vector
ranking by reciprocal rank in one statement, inside one knowledge base."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.state import app_state
from backend.modules.knowledge_base.models import Chunk
from backend.modules.knowledge_base.search import HYBRID_CANDIDATES, RRF_K
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
    for name, text in DOCUMENTS.items():
        ids[name] = (await add_text(client, headers, kb, name, text)).json()["id"]
        await add_text(client, headers, other, name, text)
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


async def test_hybrid_is_the_reciprocal_rank_fusion_of_both_rankings(
    client: httpx.AsyncClient,
    corpus: tuple[dict[str, str], str, dict[str, str]],
    app: FastAPI,
) -> None:
    headers, kb, _ = corpus
    for exact in (True, False):  # a small knowledge base's exact scan, then the HNSW path
        settings = app_state(app).get(KnowledgeBaseSettings)
        settings.search_exact_max_chunks = 10_000 if exact else 0
        # Hybrid's keyword half takes chunks with any of the words: "a or b" in keyword mode.
        for words in (["database", "pool", "timed"], ["jupiter", "moons"], ["release", "roll"]):
            query = " ".join(words)
            deep = HYBRID_CANDIDATES
            vector = await search(client, headers, kb, query, top_k=deep, mode="vector")
            any_word = " or ".join(words)
            keyword = await search(client, headers, kb, any_word, top_k=deep, mode="keyword")
            assert len(vector) == len(DOCUMENTS)  # only this knowledge base's chunks
            assert keyword
            fused: dict[str, float] = {}
            for ranking in (vector, keyword):
                for rank, result in enumerate(ranking, start=1):
                    fused[result["chunk_id"]] = fused.get(result["chunk_id"], 0) + 1 / (
                        RRF_K + rank
                    )
            expected = sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:4]

            hybrid = await search(client, headers, kb, query, top_k=4)

            assert [r["chunk_id"] for r in hybrid] == [chunk for chunk, _ in expected], query
            assert [r["score"] for r in hybrid] == pytest.approx([s for _, s in expected])
            # Found by both: ranked above what only one ranking has.
            assert hybrid[0]["chunk_id"] in {r["chunk_id"] for r in keyword}


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
