"""Reranking through HTTP, against a reranker on loopback in both APIs' shapes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.state import app_state
from backend.modules.knowledge_base.rerank import Reranker
from tests.modules.knowledge_base.test_hybrid_search import DOCUMENTS, search
from tests.modules.knowledge_base.test_knowledge_base import KBS, add_text, make_kb
from tests.modules.user.factories import user_with_token
from tests.support.loopback import read_body, respond, serve_asgi

requests: list[dict[str, Any]] = []
failing: list[int] = []  # statuses to answer with instead


async def reranker(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Scores a text by how many times it holds the letter "o": an order no search would give.
    `/tei/rerank` answers as TEI does, `/cohere/rerank` as Cohere (and Jina, vLLM) do."""
    body = json.loads(await read_body(receive))
    requests.append({"path": scope["path"], **body})
    if failing:
        await respond(send, failing[0], b"down", b"text/plain")
        return
    texts = body["texts"] if scope["path"].startswith("/tei") else body["documents"]
    scores = [(i, float(text.count("o"))) for i, text in enumerate(texts)]
    if scope["path"].startswith("/tei"):
        answer: Any = [{"index": i, "score": s} for i, s in sorted(scores, key=lambda x: -x[1])]
    else:
        answer = {"results": [{"index": i, "relevance_score": s} for i, s in scores]}
    await respond(send, 200, json.dumps(answer).encode(), b"application/json")


@pytest.fixture(scope="module")
async def reranker_url() -> AsyncIterator[str]:
    async with serve_asgi(reranker) as url:
        yield url


@pytest.fixture
async def kb(client: httpx.AsyncClient, session: AsyncSession) -> tuple[dict[str, str], str]:
    requests.clear()
    failing.clear()
    _, headers = await user_with_token(client, session)
    kb = await make_kb(client, headers)
    for name, text in DOCUMENTS.items():
        assert (await add_text(client, headers, kb, name, text)).status_code == 200
    return headers, kb


def use_reranker(app: FastAPI, url: str, api: str) -> None:
    """What RERANK_URL and RERANK_API give at start-up, for this test's running app."""
    state = app_state(app)
    state.provide(
        Reranker,
        Reranker(url=url, api=api, model="m", api_key="rk", timeout=5, retries=1, max_backoff=0),
    )


@pytest.mark.parametrize("api", ["tei", "cohere"])
async def test_results_come_in_the_rerankers_order(
    client: httpx.AsyncClient,
    app: FastAPI,
    kb: tuple[dict[str, str], str],
    reranker_url: str,
    api: str,
) -> None:
    headers, kb_id = kb
    use_reranker(app, f"{reranker_url}/{api}", api)

    found = await search(client, headers, kb_id, "database pool", top_k=2)

    counts = sorted((text.count("o") for text in DOCUMENTS.values()), reverse=True)
    assert [r["score"] for r in found] == [float(n) for n in counts[:2]]
    assert [r["text"].count("o") for r in found] == counts[:2]
    [sent] = requests
    texts = sent["texts"] if api == "tei" else sent["documents"]
    assert sent["query"] == "database pool"
    assert sorted(texts) == sorted(DOCUMENTS.values())  # every candidate, not just the top 2
    if api == "cohere":
        assert sent["model"] == "m"


async def test_a_failing_reranker_is_a_502_after_its_retries(
    client: httpx.AsyncClient, app: FastAPI, kb: tuple[dict[str, str], str], reranker_url: str
) -> None:
    headers, kb_id = kb
    use_reranker(app, f"{reranker_url}/tei", "tei")
    failing.append(503)
    response = await client.post(
        f"{KBS}/{kb_id}/search", headers=headers, json={"query": "database pool"}
    )
    assert response.status_code == 502
    assert "reranking service failed" in response.json()["detail"]
    assert len(requests) == 2  # the first try and one retry


async def test_no_reranker_unless_configured(
    client: httpx.AsyncClient, app: FastAPI, kb: tuple[dict[str, str], str]
) -> None:
    headers, kb_id = kb
    assert app_state(app).find(Reranker) is None
    found = await search(client, headers, kb_id, "database pool", top_k=2)
    assert len(found) == 2
    assert requests == []
