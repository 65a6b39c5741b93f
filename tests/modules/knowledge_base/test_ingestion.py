"""Background ingestion's promises through the API: a transient failure is retried, the last
attempt fails with the reason, and a document taken over from a worker whose lease ran out is
stored once. The embedder is a real OpenAI-compatible server on loopback that fails on request
(tests/modules/knowledge_base/test_embeddings.py's stub)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.state import app_state
from backend.main import create_app
from backend.modules.knowledge_base.chunk_copy import BATCH
from backend.modules.knowledge_base.embeddings import OpenAIEmbedder
from backend.modules.knowledge_base.ingestion import Ingestion
from backend.modules.knowledge_base.models import EMBEDDING_DIM, Chunk
from backend.modules.knowledge_base.settings import KnowledgeBaseSettings
from tests.modules.knowledge_base.test_embeddings import calls, failures, gate, stub
from tests.modules.knowledge_base.test_knowledge_base import KBS, make_kb
from tests.modules.user.factories import PASSWORD, login, user_with_token
from tests.support import db
from tests.support.loopback import serve_asgi
from tests.support.settings import configured


def remote_embedder(url: str, timeout: float = 5) -> OpenAIEmbedder:
    """The loopback server's embedder, 64 texts a request, retrying nothing itself: each
    failure reaches the queue."""
    return OpenAIEmbedder(
        base_url=f"{url}/v1",
        model="m",
        dimension=EMBEDDING_DIM,
        api_key=None,
        batch_size=64,
        timeout=timeout,
        retries=0,
    )


@pytest.fixture
async def ingestion(app: FastAPI) -> AsyncIterator[Ingestion]:
    """The app's ingestion, embedding through the loopback server."""
    failures.clear()
    async with serve_asgi(stub) as url:
        ingestion = app_state(app).get(Ingestion)
        ingestion.embedder = remote_embedder(url)
        yield ingestion
        await ingestion.embedder.aclose()


async def queued(client: httpx.AsyncClient, session: AsyncSession) -> tuple[str, dict[str, str]]:
    """A document added through the API and not yet processed: its URL, and the owner's auth."""
    _, headers = await user_with_token(client, session)
    kb = await make_kb(client, headers)
    added = await client.post(
        f"{KBS}/{kb}/documents", headers=headers, json={"title": "t", "text": "Some words."}
    )
    assert added.status_code == 202
    return added.headers["location"], headers


async def due_now(session: AsyncSession) -> None:
    """Skip the backoff: what a retried document waits for."""
    await session.execute(text("UPDATE documents SET run_after = now()"))


async def test_a_failing_embedder_is_retried_and_the_document_becomes_ready(
    client: httpx.AsyncClient, session: AsyncSession, ingestion: Ingestion
) -> None:
    url, headers = await queued(client, session)
    failures.append(503)

    assert await ingestion.drain() == 1
    document = (await client.get(url, headers=headers)).json()
    assert document["status"] == "pending"  # back in the queue, with the reason
    assert "503" in document["error"]
    assert await ingestion.drain() == 0  # not before its backoff is over

    await due_now(session)
    assert await ingestion.drain() == 1
    document = (await client.get(url, headers=headers)).json()
    assert (document["status"], document["error"], document["chunk_count"]) == ("ready", None, 1)


@pytest.mark.settings(ingestion_max_attempts=2)
async def test_after_the_last_attempt_the_document_fails_with_the_reason(
    client: httpx.AsyncClient, session: AsyncSession, ingestion: Ingestion
) -> None:
    url, headers = await queued(client, session)
    failures.extend([503, 503])

    await ingestion.drain()
    await due_now(session)
    await ingestion.drain()
    document = (await client.get(url, headers=headers)).json()
    assert document["status"] == "failed"
    assert "503" in document["error"]
    assert await session.scalar(select(func.count()).select_from(Chunk)) == 0


@pytest.mark.settings(chunk_size=150, chunk_overlap=0)
async def test_an_embedder_failing_midway_through_a_long_document_leaves_no_chunks(
    client: httpx.AsyncClient, session: AsyncSession, ingestion: Ingestion
) -> None:
    """The chunks stream to PostgreSQL while the next batch is embedded: a failure on a later
    batch aborts the write, and the retry stores every chunk once, in order, text intact."""
    _, headers = await user_with_token(client, session)
    kb = await make_kb(client, headers)
    paragraphs = [
        f"Paragraph {n}: naïve café, 東京, emoji 🚀, tab\tand backslash \\." for n in range(1200)
    ]
    added = await client.post(
        f"{KBS}/{kb}/documents",
        headers=headers,
        json={"title": "long", "text": "# Long\n\n" + "\n\n".join(paragraphs)},
    )
    url = added.headers["location"]
    # Treated as a model in this process: embedded batch by batch during the COPY.
    ingestion.embedder.local = True
    first_batch = BATCH // 64  # the fixture's embedder sends 64 texts a request
    failures.extend([200] * first_batch + [503])

    assert await ingestion.drain() == 1
    document = (await client.get(url, headers=headers)).json()
    assert (document["status"], document["chunk_count"]) == ("pending", 0)
    assert "503" in document["error"]
    assert await session.scalar(select(func.count()).select_from(Chunk)) == 0

    await due_now(session)
    assert await ingestion.drain() == 1
    document = (await client.get(url, headers=headers)).json()
    assert document["status"] == "ready"
    assert document["chunk_count"] > 2 * BATCH
    rows = (await session.execute(select(Chunk.ordinal, Chunk.text, Chunk.section))).all()
    assert sorted(row.ordinal for row in rows) == list(range(document["chunk_count"]))
    assert {row.section for row in rows} == {"Long"}
    stored = "\n\n".join(row.text for row in sorted(rows))
    for paragraph in (paragraphs[0], paragraphs[600], paragraphs[-1]):
        assert paragraph in stored


async def test_a_document_taken_over_after_its_lease_is_stored_once(
    client: httpx.AsyncClient, session: AsyncSession, ingestion: Ingestion
) -> None:
    """A worker stalls past its lease; another takes the document over and stores it; the first
    one wakes up and finishes too: the document still has its chunks once."""
    url, headers = await queued(client, session)
    [stalled] = await ingestion.claim()
    await session.execute(text("UPDATE documents SET locked_until = now() - interval '1 second'"))
    [taken_over] = await ingestion.claim()
    assert taken_over.attempts == stalled.attempts + 1

    assert await ingestion.process(taken_over) == "ready"
    assert await ingestion.process(stalled) == "superseded"
    assert await ingestion.process(taken_over) == "superseded"  # already done

    assert await session.scalar(select(func.count()).select_from(Chunk)) == 1
    document = (await client.get(url, headers=headers)).json()
    assert (document["status"], document["chunk_count"]) == ("ready", 1)
    kb = (await client.get(url.rsplit("/documents", 1)[0], headers=headers)).json()
    assert kb["chunk_count"] == 1


async def test_a_file_deleted_before_it_is_processed_fails_the_document_with_the_reason(
    client: httpx.AsyncClient, session: AsyncSession, ingestion: Ingestion
) -> None:
    _, headers = await user_with_token(client, session)
    kb = await make_kb(client, headers)
    upload = await client.post(
        "/api/v1/files", headers=headers, files={"file": ("a.md", b"# Notes\n\nwords")}
    )
    added = await client.post(
        f"{KBS}/{kb}/documents", headers=headers, json={"file_id": upload.json()["id"]}
    )
    assert added.status_code == 202
    gone = await client.delete(f"/api/v1/files/{upload.json()['id']}", headers=headers)
    assert gone.status_code == 204

    assert await ingestion.drain() == 1
    document = (await client.get(added.headers["location"], headers=headers)).json()
    assert document["status"] == "failed"
    assert document["error"] == "The source file was deleted before it was processed"
    assert await session.scalar(select(func.count()).select_from(Chunk)) == 0


@pytest.mark.slow
async def test_a_document_can_be_deleted_while_a_remote_embedder_works_on_it(
    migrated_db: URL, tmp_path: Path
) -> None:
    """A remote embedder can take minutes (rate limits, retries): it is asked before the worker
    locks the document, so deleting the document meanwhile answers at once, and the worker then
    finds it gone. Committed transactions on a database of its own: a lock shows."""
    settings = configured(
        database_url=db.sync_url(migrated_db),
        file_storage_dir=tmp_path,
        background_in_process=False,
    )
    app = create_app(*settings)
    transport = httpx.ASGITransport(app=app)
    opened = asyncio.Event()
    gate.append(opened)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
        serve_asgi(stub) as stub_url,
    ):
        try:
            account = {"email": "r@example.com", "username": "remote", "password": PASSWORD}
            assert (await client.post("/api/v1/auth/register", json=account)).status_code == 201
            headers = await login(client, "remote")
            kb = await make_kb(client, headers)
            added = await client.post(
                f"{KBS}/{kb}/documents", headers=headers, json={"title": "t", "text": "Words."}
            )
            ingestion = app_state(app).get(Ingestion)
            ingestion.embedder = remote_embedder(stub_url, timeout=30)
            [claim] = await ingestion.claim()
            calls.clear()
            processing = asyncio.create_task(ingestion.process(claim))
            while not calls:  # noqa: ASYNC110 (the stub records its requests; no event)
                await asyncio.sleep(0.01)  # until the embedder has the request and holds it

            deleted = await asyncio.wait_for(
                client.delete(added.headers["location"], headers=headers), timeout=10
            )
            assert deleted.status_code == 204
            opened.set()
            assert await processing == "superseded"
            assert (await client.get(f"{KBS}/{kb}", headers=headers)).json()["chunk_count"] == 0
            await ingestion.embedder.aclose()
        finally:  # a failed assertion must not leave the stub's request (and the server) waiting
            opened.set()
            gate.remove(opened)


async def test_owners_take_turns_at_claim(
    client: httpx.AsyncClient, session: AsyncSession, ingestion: Ingestion
) -> None:
    """One user floods the queue; another's document, added after, is among the first taken."""
    _, flooder = await user_with_token(client, session)
    flood_kb = await make_kb(client, flooder)
    for n in range(5):
        body = {"title": f"flood {n}", "text": "Words."}
        assert (
            await client.post(f"{KBS}/{flood_kb}/documents", headers=flooder, json=body)
        ).status_code == 202
    _, other = await user_with_token(client, session)
    other_kb = await make_kb(client, other)
    late = await client.post(
        f"{KBS}/{other_kb}/documents", headers=other, json={"title": "late", "text": "Words."}
    )

    first, second = await ingestion.claim(limit=2)

    assert str(second.id) in late.headers["location"] or str(first.id) in late.headers["location"]
    assert {str(first.knowledge_base_id), str(second.knowledge_base_id)} == {flood_kb, other_kb}


@pytest.mark.settings(max_queued_documents_per_user=3, max_documents_per_user=4)
async def test_per_user_document_limits_answer_with_the_figures(
    client: httpx.AsyncClient, session: AsyncSession, ingestion: Ingestion
) -> None:
    _, headers = await user_with_token(client, session)
    kb = await make_kb(client, headers)
    body = {"title": "t", "text": "Some words."}
    statuses = [
        (await client.post(f"{KBS}/{kb}/documents", headers=headers, json=body)).status_code
        for _ in range(3)
    ]
    queued = await client.post(f"{KBS}/{kb}/documents", headers=headers, json=body)
    await ingestion.drain()
    fourth = await client.post(f"{KBS}/{kb}/documents", headers=headers, json=body)
    fifth = await client.post(f"{KBS}/{kb}/documents", headers=headers, json=body)
    listed = (await client.get(f"{KBS}/{kb}/documents", headers=headers)).json()

    assert statuses == [202, 202, 202]
    assert queued.status_code == 429
    assert "You have 3 documents waiting" in queued.json()["detail"]
    assert queued.headers["retry-after"]
    assert fourth.status_code == 202
    assert fifth.status_code == 413
    assert "You have 4 documents; the limit is 4" in fifth.json()["detail"]
    assert len(listed["items"]) == 4


async def test_small_documents_are_stored_together_and_each_keeps_its_own_fate(
    client: httpx.AsyncClient, session: AsyncSession, app: FastAPI
) -> None:
    """Small text bodies are claimed and stored as one batch: each gets its own chunks, counts
    and status; one that cannot be read fails alone, one deleted meanwhile is skipped, a large
    one waits for a claim of its own."""
    ingestion = app_state(app).get(Ingestion)
    _, headers = await user_with_token(client, session)
    kb = await make_kb(client, headers)
    added = []
    too_long = "Longer than the limit the parser is given below."
    for n, body in enumerate(["Alpha words.", too_long, "Beta words.", "Gamma words."]):
        posted = await client.post(
            f"{KBS}/{kb}/documents", headers=headers, json={"title": f"d{n}", "text": body}
        )
        assert posted.status_code == 202, posted.text
        added.append(posted.headers["location"])
    big = "Many words here. " * 5000  # 85 KB: not small, so alone
    posted = await client.post(
        f"{KBS}/{kb}/documents", headers=headers, json={"title": "big", "text": big}
    )
    added.append(posted.headers["location"])
    # The small ones first in the queue (in one transaction, their order is their random ids').
    await session.execute(
        text(
            "UPDATE documents SET run_after = run_after - interval '1 second' WHERE title <> 'big'"
        )
    )

    batch = await ingestion.claim_batch()
    assert len(batch) == 4  # the big one is not in it
    assert (await client.delete(added[3], headers=headers)).status_code == 204
    settings = app_state(app).get(KnowledgeBaseSettings)
    limit, settings.max_document_chars = settings.max_document_chars, 20
    try:
        statuses = await ingestion.process_batch(batch)
    finally:
        settings.max_document_chars = limit
    fate = {str(claim.id): status for claim, status in zip(batch, statuses, strict=True)}
    assert [fate[url.rsplit("/", 1)[1]] for url in added[:4]] == [
        "ready",
        "failed",
        "ready",
        "superseded",
    ]
    assert [c.small for c in await ingestion.claim_batch()] == [False]

    documents = [(await client.get(url, headers=headers)).json() for url in added[:3]]
    assert [d["status"] for d in documents] == ["ready", "failed", "ready"]
    assert [d["chunk_count"] for d in documents] == [1, 0, 1]
    rows = (await session.execute(select(Chunk.text, Chunk.ordinal))).all()
    assert sorted(rows) == [("Alpha words.", 0), ("Beta words.", 0)]
    assert (await client.get(f"{KBS}/{kb}", headers=headers)).json()["chunk_count"] == 2


@pytest.mark.settings(max_queued_documents_per_user=3)
async def test_a_batch_answers_each_document_and_stops_at_the_limits(
    client: httpx.AsyncClient, session: AsyncSession, ingestion: Ingestion
) -> None:
    """POST .../document-batches: each document answered in order, its own id or the error it
    would have had alone; past the queue limit the rest are refused, and a batch of which
    none could be queued is that error."""
    _, headers = await user_with_token(client, session)
    kb = await make_kb(client, headers)
    batch = f"{KBS}/{kb}/document-batches"
    missing = "00000000-0000-4000-8000-000000000000"
    documents = [
        {"title": "a", "text": "Alpha words."},
        {"file_id": missing},
        {"title": "b", "text": "Beta words."},
        {"title": "c", "text": "Gamma words."},
        {"title": "d", "text": "Delta words."},
    ]
    answered = await client.post(batch, headers=headers, json={"documents": documents})
    assert answered.status_code == 202, answered.text
    items = answered.json()["documents"]
    assert [(item["status"], item["code"]) for item in items] == [
        ("pending", None),
        ("refused", "source_file_not_found"),
        ("pending", None),
        ("pending", None),
        ("refused", "too_many_queued_documents"),
    ]
    assert "You have 3 documents waiting" in items[4]["detail"]
    assert await ingestion.drain() == 3
    for item, title in zip((items[0], items[2], items[3]), "abc", strict=True):
        document = (await client.get(f"{KBS}/{kb}/documents/{item['id']}", headers=headers)).json()
        assert (document["title"], document["status"], document["chunk_count"]) == (
            title,
            "ready",
            1,
        )

    await client.post(batch, headers=headers, json={"documents": documents[2:]})
    refused = await client.post(batch, headers=headers, json={"documents": documents[:1]})
    assert refused.status_code == 429
    assert refused.headers["retry-after"]
    too_many = await client.post(batch, headers=headers, json={"documents": documents * 201})
    assert too_many.status_code == 422
    listed = (await client.get(f"{KBS}/{kb}/documents", headers=headers)).json()
    assert len(listed["items"]) == 6
