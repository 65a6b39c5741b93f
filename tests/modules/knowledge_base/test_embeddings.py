"""The OpenAI-compatible embedder against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from backend.core.config import SettingsError
from backend.main import create_app
from backend.modules.knowledge_base.embeddings import (
    HashingEmbedder,
    OpenAIEmbedder,
    WordLlamaEmbedder,
)
from backend.modules.knowledge_base.exceptions import EmbeddingError
from backend.modules.knowledge_base.models import EMBEDDING_DIM
from tests.support.loopback import read_body, respond, serve_asgi

calls: list[dict[str, object]] = []
# The statuses of the next requests, first first (200: answered properly; a 429 says
# Retry-After: 0); once empty, every request is answered properly.
failures: list[int] = []
# While set and not yet opened, requests wait for it: an embedder that takes its time.
gate: list[asyncio.Event] = []


async def stub(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A minimal /v1/embeddings: vector i is [len(text), i, 0, ...], of the dimension asked
    (`dimensions`) or the column's (EMBEDDING_DIM), or 5 for the model "wrong-dim"."""
    assert scope["type"] == "http"
    request = json.loads(await read_body(receive))
    calls.append({"auth": dict(scope["headers"]).get(b"authorization"), **request})
    for event in gate:
        await event.wait()
    status = failures.pop(0) if failures else 200
    if status != 200:
        headers = [(b"retry-after", b"0")] if status == 429 else []
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"busy"})
        return
    dim = 5 if request["model"] == "wrong-dim" else request.get("dimensions", EMBEDDING_DIM)
    data = [
        {"index": i, "embedding": [float(len(t)), float(i)] + [0.0] * (dim - 2)}
        for i, t in enumerate(request["input"])
    ][::-1]  # out of order on purpose: the client must sort by index
    await respond(send, 200, json.dumps({"data": data}).encode(), b"application/json")


@pytest.fixture(scope="module")
async def stub_url() -> AsyncIterator[str]:
    async with serve_asgi(stub) as url:
        yield f"{url}/v1"


@pytest.fixture(autouse=True)
def fresh_stub() -> None:
    calls.clear()
    failures.clear()


def remote(url: str, **options: Any) -> OpenAIEmbedder:
    settings: dict[str, Any] = {
        "model": "m",
        "dimension": 8,
        "request_dimensions": 8,
        "api_key": None,
        "batch_size": 8,
        "timeout": 5,
        "max_backoff": 0.05,
    }
    return OpenAIEmbedder(base_url=url, **(settings | options))


async def test_batches_keep_order_and_send_the_key(stub_url: str) -> None:
    embedder = remote(stub_url, api_key="sk-test", batch_size=2)
    texts = ["a", "bb", "ccc", "dddd", "eeeee"]
    vectors = await embedder.embed(texts)
    await embedder.aclose()

    assert [v[0] for v in vectors] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert all(len(v) == 8 for v in vectors)
    assert [len(c["input"]) for c in calls] == [2, 2, 1]  # type: ignore[arg-type]
    assert calls[0]["auth"] == b"Bearer sk-test"
    assert calls[0]["dimensions"] == 8


async def test_dimensions_are_sent_only_when_configured(stub_url: str) -> None:
    """vLLM answers 400 to `dimensions` for a model that cannot shorten its vectors."""
    embedder = remote(stub_url, dimension=EMBEDDING_DIM, request_dimensions=None)
    [vector] = await embedder.embed(["x"])
    await embedder.aclose()
    assert len(vector) == EMBEDDING_DIM
    assert "dimensions" not in calls[0]


async def test_rate_limits_and_server_errors_are_retried(stub_url: str) -> None:
    failures.extend([429, 503, 502])
    embedder = remote(stub_url, retries=3)
    vectors = await embedder.embed(["a", "bb"])
    await embedder.aclose()
    assert [v[0] for v in vectors] == [1.0, 2.0]
    assert len(calls) == 4  # three refusals, then the answer


async def test_retries_end_in_a_502_and_a_client_error_is_not_retried(stub_url: str) -> None:
    failures.extend([503] * 10)
    embedder = remote(stub_url, retries=2)
    with pytest.raises(EmbeddingError, match="503") as info:
        await embedder.embed(["x"])
    assert info.value.status_code == 502
    assert len(calls) == 3
    failures[:] = [400]
    calls.clear()
    with pytest.raises(EmbeddingError, match="400"):
        await embedder.embed(["x"])
    assert len(calls) == 1
    await embedder.aclose()


async def test_query_and_passage_prefixes(stub_url: str) -> None:
    """e5 and nomic-embed were trained with them; without, their retrieval quality drops."""
    embedder = remote(stub_url, prefixes={"query": "query: ", "passage": "passage: "})
    await embedder.embed(["stored text"])
    await embedder.embed(["what is asked"], kind="query")
    await embedder.aclose()
    assert [c["input"] for c in calls] == [["passage: stored text"], ["query: what is asked"]]


async def test_a_model_with_another_dimension_is_a_clear_error(stub_url: str) -> None:
    embedder = remote(stub_url, model="wrong-dim")
    with pytest.raises(EmbeddingError, match="5-dimensional vectors; EMBEDDING_DIM is 8"):
        await embedder.embed(["x"])
    await embedder.aclose()


async def test_an_unreachable_service_is_a_502_error() -> None:
    embedder = remote("http://127.0.0.1:1/v1", retries=2)  # each retry refused too
    with pytest.raises(EmbeddingError) as info:
        await embedder.embed(["x"])
    assert info.value.status_code == 502
    await embedder.aclose()


async def test_a_failure_never_shows_the_services_url_or_credentials(stub_url: str) -> None:
    """A 502's body is the client's to read; EMBEDDING_BASE_URL may hold a key."""
    failures.extend([503] * 3)
    secret_url = stub_url.replace("http://", "http://user:s3cret-key@")
    embedder = remote(secret_url, retries=0)
    with pytest.raises(EmbeddingError) as refused:
        await embedder.embed(["x"])
    await embedder.aclose()
    unreachable = remote("http://user:s3cret-key@127.0.0.1:1/v1", retries=0)
    with pytest.raises(EmbeddingError) as down:
        await unreachable.embed(["x"])
    await unreachable.aclose()

    for error in (refused.value, down.value):
        assert "s3cret" not in error.detail
        assert "127.0.0.1" not in error.detail
    assert "HTTP 503" in refused.value.detail


def test_configured_dimension_must_match_the_column(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDDING_PROVIDER", "hashing")
    monkeypatch.setenv("EMBEDDING_DIM", "768")
    with pytest.raises(SettingsError, match=r"EMBEDDING_DIM is 768 .* vector\(256\)"):
        create_app()


def test_the_default_model_refuses_a_dimension_it_cannot_make(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMBEDDING_DIM", "384")
    with pytest.raises(SettingsError, match=r"EMBEDDING_DIM is 384; the wordllama model makes 64"):
        create_app()


async def test_the_default_model_embeds_offline_and_truncates() -> None:
    """WordLlama loads from its package (this machine has no route to a model hub) and its
    shorter vectors are the longer ones cut and normalised again (Matryoshka)."""
    full, short = WordLlamaEmbedder(256), WordLlamaEmbedder(64)
    text = ["Alembic runs database migrations."]
    [[*long_vector]], [[*short_vector]] = await full.embed(text), await short.embed(text)
    assert len(long_vector) == 256
    assert len(short_vector) == 64
    head = np.array(long_vector[:64])
    assert np.allclose(head / np.linalg.norm(head), short_vector, atol=1e-5)


def test_the_word_cache_is_bounded_whatever_the_documents() -> None:
    """Distinct long words (an attacker's documents) neither grow the cache nor enter it."""
    embedder = HashingEmbedder(64)
    words = (f"w{n:0{HashingEmbedder.CACHE_WORD_CHARS - 1}d}" for n in range(10**9))
    for _ in range(3):
        embedder._embed_one(" ".join(next(words) for _ in range(HashingEmbedder.CACHE_WORDS)))
    long_words = " ".join("x" * 40 + str(n) for n in range(1000))
    embedder._embed_one(long_words)

    info = embedder._cached_features.cache_info()
    assert info.currsize == HashingEmbedder.CACHE_WORDS
    assert info.maxsize == HashingEmbedder.CACHE_WORDS
    assert embedder._features("x" * 41) is not embedder._features("x" * 41)  # never cached
