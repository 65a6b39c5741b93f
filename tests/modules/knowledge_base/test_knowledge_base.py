from __future__ import annotations

import uuid

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from sqlalchemy import event, func, select
from sqlalchemy import text as sql
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from backend.core.state import app_state
from backend.db.session import Database
from backend.modules.knowledge_base.chunking import split_text
from backend.modules.knowledge_base.embeddings import WordLlamaEmbedder
from backend.modules.knowledge_base.models import EMBEDDING_DIM, Chunk
from backend.modules.knowledge_base.search import use_index_settings
from backend.modules.knowledge_base.settings import KnowledgeBaseSettings
from tests.modules.knowledge_base.ingest import add_document
from tests.modules.user.factories import user_with_token

KBS = "/api/v1/knowledge-bases"

CORPUS = {
    "Alembic": (
        "Alembic runs database migrations. Every schema change is a revision script with an "
        "upgrade and a downgrade; autogenerate compares the models with the database."
    ),
    "Cooking": (
        "Boil the pasta in salted water for nine minutes, then toss it with olive oil, garlic "
        "and parmesan cheese. Serve the spaghetti warm."
    ),
    "Astronomy": (
        "Jupiter is the largest planet of the solar system; its moons Io, Europa, Ganymede and "
        "Callisto were found by Galileo with an early telescope."
    ),
}


async def make_kb(client: httpx.AsyncClient, headers: dict[str, str], name: str = "kb") -> str:
    response = await client.post(KBS, headers=headers, json={"name": name})
    assert response.status_code == 201
    return str(response.json()["id"])


async def add_text(
    client: httpx.AsyncClient, headers: dict[str, str], kb: str, title: str, text: str
) -> httpx.Response:
    return await add_document(client, headers, f"{KBS}/{kb}", {"title": title, "text": text})


async def test_crud(client: httpx.AsyncClient, session: AsyncSession) -> None:
    _, headers = await user_with_token(client, session)
    created = await client.post(KBS, headers=headers, json={"name": "Docs", "description": "d"})
    assert created.status_code == 201
    kb = created.json()
    assert (kb["name"], kb["description"], kb["chunk_count"]) == ("Docs", "d", 0)

    listed = (await client.get(KBS, headers=headers)).json()
    assert [k["id"] for k in listed["items"]] == [kb["id"]]
    assert listed["has_more"] is False
    renamed = await client.patch(f"{KBS}/{kb['id']}", headers=headers, json={"name": "Manual"})
    assert renamed.status_code == 200
    assert renamed.json()["name"] == "Manual"
    assert renamed.json()["description"] == "d"

    await add_text(client, headers, kb["id"], "t", "some text")
    assert (await client.delete(f"{KBS}/{kb['id']}", headers=headers)).status_code == 204
    assert (await client.get(f"{KBS}/{kb['id']}", headers=headers)).status_code == 404
    chunks = await session.scalar(select(func.count()).select_from(Chunk))
    assert chunks == 0


async def test_documents_are_chunked_embedded_and_searchable(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    _, headers = await user_with_token(client, session)
    kb = await make_kb(client, headers)
    ids = {}
    for title, text in CORPUS.items():
        response = await add_text(client, headers, kb, title, text)
        assert response.status_code == 200
        assert response.json()["chunk_count"] == 1
        ids[title] = response.json()["id"]

    for query, expected in (
        ("how do I write a database migration revision?", "Alembic"),
        ("spaghetti with garlic and cheese", "Cooking"),
        ("moons of the largest planet", "Astronomy"),
    ):
        response = await client.post(
            f"{KBS}/{kb}/search", headers=headers, json={"query": query, "top_k": 3}
        )
        assert response.status_code == 200
        results = response.json()["results"]
        assert results[0]["document_id"] == ids[expected], query
        scores = [r["score"] for r in results]
        assert scores == sorted(scores, reverse=True)

    documents = await client.get(f"{KBS}/{kb}/documents", headers=headers)
    assert {d["title"] for d in documents.json()["items"]} == set(CORPUS)
    first = await client.get(f"{KBS}/{kb}/documents", headers=headers, params={"limit": 1})
    assert len(first.json()["items"]) == 1
    assert first.json()["has_more"] is True
    gone = await client.delete(f"{KBS}/{kb}/documents/{ids['Cooking']}", headers=headers)
    assert gone.status_code == 204
    after = await client.post(
        f"{KBS}/{kb}/search", headers=headers, json={"query": "spaghetti", "top_k": 5}
    )
    assert ids["Cooking"] not in {r["document_id"] for r in after.json()["results"]}
    assert (await client.get(f"{KBS}/{kb}", headers=headers)).json()["chunk_count"] == 2


# Each question shares no content word with the passage that answers it (the default model must
# know that a "car" is a "vehicle"); the hashing embedder put the right one first 2 times of 8.
PARAPHRASES = {
    "Vehicles": "Electric cars need charging stations along motorways for long journeys.",
    "Medicine": "Physicians prescribe antibiotics to treat bacterial infections in patients.",
    "Finance": "The central bank raised interest rates to slow rising inflation.",
    "Pets": "Puppies must be vaccinated and house-trained during their first months.",
    "Weather": "Heavy thunderstorms and flooding are forecast for the coast tomorrow.",
    "Music": "The orchestra performed a symphony with violins, cellos and a conductor.",
    "Sports": "The striker scored twice and the team won the football championship.",
    "Cooking": "Knead the dough, let it rise, then bake the loaf until golden.",
}
QUESTIONS = {
    "where can I plug in an automobile on a highway trip?": "Vehicles",
    "which drugs do doctors give for germs?": "Medicine",
    "why is borrowing money getting more expensive?": "Finance",
    "how to look after a young dog": "Pets",
    "will it rain hard at the beach?": "Weather",
    "a concert of classical string instruments": "Music",
    "who won the soccer title?": "Sports",
    "how to make bread at home": "Cooking",
}


async def best_documents(
    client: httpx.AsyncClient, headers: dict[str, str], search: str
) -> dict[str, str]:
    """Each of QUESTIONS's best match by vector search at `search` (a search URL): its document
    id."""
    best = {}
    for question in QUESTIONS:
        response = await client.post(
            search, headers=headers, json={"query": question, "top_k": 1, "mode": "vector"}
        )
        assert response.status_code == 200, response.text
        [result] = response.json()["results"]
        best[question] = result["document_id"]
    return best


async def test_the_default_model_finds_passages_by_meaning(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    _, headers = await user_with_token(client, session)
    kb = await make_kb(client, headers)
    for title, text in PARAPHRASES.items():
        assert (await add_text(client, headers, kb, title, text)).status_code == 200
    titles = {
        d["id"]: d["title"]
        for d in (await client.get(f"{KBS}/{kb}/documents", headers=headers)).json()["items"]
    }

    best = await best_documents(client, headers, f"{KBS}/{kb}/search")
    assert {question: titles[document] for question, document in best.items()} == QUESTIONS


async def test_vectors_are_stored_and_compared_as_the_embedder_made_them(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    _, headers = await user_with_token(client, session)
    kb = await make_kb(client, headers)
    text = CORPUS["Astronomy"]
    assert (await add_text(client, headers, kb, "Astronomy", text)).status_code == 200

    [expected] = await WordLlamaEmbedder(EMBEDDING_DIM).embed([text])
    stored = await session.scalar(select(Chunk.embedding).where(Chunk.text == text))
    assert stored is not None
    assert np.allclose(stored, expected, atol=1e-7)  # float4 in the column, nothing lost on the way
    response = await client.post(
        f"{KBS}/{kb}/search", headers=headers, json={"query": text, "top_k": 1, "mode": "vector"}
    )
    assert response.json()["results"][0]["score"] == pytest.approx(1.0, abs=1e-6)


async def test_approximate_search_finds_the_same_and_stays_in_its_knowledge_base(
    client: httpx.AsyncClient, session: AsyncSession, app: FastAPI
) -> None:
    _, headers = await user_with_token(client, session)
    mine, other = await make_kb(client, headers, "mine"), await make_kb(client, headers, "other")
    for title, text in CORPUS.items():
        await add_text(client, headers, mine, title, text)
        await add_text(client, headers, other, title, text)

    exact = await client.post(
        f"{KBS}/{mine}/search", headers=headers, json={"query": "planet moons", "top_k": 3}
    )
    app_state(app).get(
        KnowledgeBaseSettings
    ).search_exact_max_chunks = 0  # every knowledge base is "large" now
    approximate = await client.post(
        f"{KBS}/{mine}/search", headers=headers, json={"query": "planet moons", "top_k": 3}
    )
    assert approximate.status_code == 200
    # All three chunks of this knowledge base, none of the other's, though the index holds six.
    assert [r["chunk_id"] for r in approximate.json()["results"]] == [
        r["chunk_id"] for r in exact.json()["results"]
    ]
    assert len(approximate.json()["results"]) == 3


async def test_document_from_an_uploaded_markdown_file(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    _, headers = await user_with_token(client, session)
    kb = await make_kb(client, headers)
    text = "# Guide\n\n" + "\n\n".join(f"Paragraph {i} about topic {i}. " * 8 for i in range(20))
    uploaded = await client.post(
        "/api/v1/files",
        headers=headers,
        files={"file": ("guide.md", text.encode(), "text/markdown")},
    )
    document = await add_document(
        client, headers, f"{KBS}/{kb}", {"file_id": uploaded.json()["id"]}
    )
    assert document.status_code == 200
    assert document.json()["status"] == "ready"
    assert document.json()["title"] == "guide.md"
    assert document.json()["chunk_count"] > 1

    image = await client.post(
        "/api/v1/files", headers=headers, files={"file": ("a.png", b"\x89PNG....", "image/png")}
    )
    refused = await client.post(
        f"{KBS}/{kb}/documents", headers=headers, json={"file_id": image.json()["id"]}
    )
    assert refused.status_code == 415


async def test_bad_input_is_a_clear_4xx(client: httpx.AsyncClient, session: AsyncSession) -> None:
    _, headers = await user_with_token(client, session)
    kb = await make_kb(client, headers)
    search = f"{KBS}/{kb}/search"
    for body in ({"query": "x", "top_k": 0}, {"query": "x", "top_k": 51}, {"query": ""}, {}):
        assert (await client.post(search, headers=headers, json=body)).status_code == 422
    empty = await add_text(client, headers, kb, "empty", "   \n  ")
    assert empty.status_code == 422
    both = await client.post(
        f"{KBS}/{kb}/documents",
        headers=headers,
        json={"title": "t", "text": "x", "file_id": "6f1d8f7e-55a7-4c59-9a53-6d4b1e0f2a11"},
    )
    assert both.status_code == 422
    missing_file = await client.post(
        f"{KBS}/{kb}/documents",
        headers=headers,
        json={"file_id": "6f1d8f7e-55a7-4c59-9a53-6d4b1e0f2a11"},
    )
    # A bad reference in the body is a bad field (422), not a missing URL (404).
    assert missing_file.status_code == 422
    assert "file_id" in missing_file.json()["detail"]
    assert (await client.get(f"{KBS}/nope", headers=headers)).status_code == 422
    assert (await client.post(KBS, headers=headers, json={"name": "  "})).status_code == 422


async def test_other_users_knowledge_bases_do_not_exist_for_you(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    _, alice = await user_with_token(client, session)
    _, bob = await user_with_token(client, session)
    kb = await make_kb(client, alice)
    doc = (await add_text(client, alice, kb, "t", "private words")).json()["id"]
    alice_file = await client.post(
        "/api/v1/files", headers=alice, files={"file": ("a.txt", b"alice's", "text/plain")}
    )
    bobs_kb = await make_kb(client, bob)

    for method, path, body in (
        ("GET", f"{KBS}/{kb}", None),
        ("PATCH", f"{KBS}/{kb}", {"name": "mine now"}),
        ("DELETE", f"{KBS}/{kb}", None),
        ("GET", f"{KBS}/{kb}/documents", None),
        ("POST", f"{KBS}/{kb}/documents", {"title": "t", "text": "x"}),
        ("DELETE", f"{KBS}/{kb}/documents/{doc}", None),
        ("POST", f"{KBS}/{kb}/search", {"query": "private"}),
    ):
        response = await client.request(method, path, headers=bob, json=body)
        assert response.status_code == 404, (method, path)
    # Bob cannot turn Alice's upload into a document of his own either: to him it does not exist,
    # exactly as a file id nobody has.
    stolen = await client.post(
        f"{KBS}/{bobs_kb}/documents", headers=bob, json={"file_id": alice_file.json()["id"]}
    )
    unknown = await client.post(
        f"{KBS}/{bobs_kb}/documents", headers=bob, json={"file_id": str(uuid.uuid4())}
    )
    assert stolen.status_code == unknown.status_code == 422
    assert stolen.json() == unknown.json()
    assert [k["id"] for k in (await client.get(KBS, headers=bob)).json()["items"]] == [bobs_kb]


@pytest.mark.parametrize(("size", "overlap"), [(200, 0), (200, 50), (1000, 150)])
def test_chunks_cover_the_text_within_size(size: int, overlap: int) -> None:
    text = " ".join(f"word{i}." if i % 7 == 0 else f"word{i}" for i in range(2000))
    chunks = split_text(text, size=size, overlap=overlap)
    assert all(len(c) <= size for c in chunks)
    words = set(text.replace(".", "").split())
    covered = set(" ".join(chunks).replace(".", "").split())
    assert covered == words
    if overlap:
        assert chunks[0].split()[-1] in chunks[1]


async def test_index_settings_are_set_once_per_pooled_connection(app_engine: AsyncEngine) -> None:
    """A read session's search sets pgvector's settings on its connection once; a transaction's
    are its own, and a rollback leaves nothing stale behind."""
    database = Database.of(app_engine)
    settings = KnowledgeBaseSettings(search_ef_search=123, search_iterative_scan="strict_order")
    statements: list[str] = []

    def record(conn: object, cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    event.listen(app_engine.sync_engine, "before_cursor_execute", record)
    try:
        for _ in range(2):
            async with database.read_sessionmaker() as session:
                await use_index_settings(session, settings)
                assert await session.scalar(sql("SHOW hnsw.ef_search")) == "123"
        assert sum("set_config" in s for s in statements) == 1

        async with database.sessionmaker() as session:
            await use_index_settings(session, settings.model_copy(update={"search_ef_search": 7}))
            assert await session.scalar(sql("SHOW hnsw.ef_search")) == "7"
            await session.rollback()
        async with database.read_sessionmaker() as session:
            await use_index_settings(session, settings)
            assert await session.scalar(sql("SHOW hnsw.iterative_scan")) == "strict_order"
            assert await session.scalar(sql("SHOW hnsw.ef_search")) == "123"
    finally:
        event.remove(app_engine.sync_engine, "before_cursor_execute", record)
