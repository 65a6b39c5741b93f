"""The OpenAI-compatible embedder against a real HTTP server on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from backend.core.config import SettingsError
from backend.main import create_app
from backend.modules.knowledge_base.embeddings import (
    EmbeddingError,
    HashingEmbedder,
    OpenAIEmbedder,
)
from tests.support.loopback import read_body, respond, serve_asgi

calls: list[dict[str, object]] = []


async def stub(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A minimal /v1/embeddings: vector i is [len(text), i, 0, ...] of the asked dimension."""
    assert scope["type"] == "http"
    request = json.loads(await read_body(receive))
    calls.append({"auth": dict(scope["headers"]).get(b"authorization"), **request})
    dim = 5 if request["model"] == "wrong-dim" else request["dimensions"]
    data = [
        {"index": i, "embedding": [float(len(t)), float(i)] + [0.0] * (dim - 2)}
        for i, t in enumerate(request["input"])
    ][::-1]  # out of order on purpose: the client must sort by index
    await respond(send, 200, json.dumps({"data": data}).encode(), b"application/json")


@pytest.fixture(scope="module")
async def stub_url() -> AsyncIterator[str]:
    async with serve_asgi(stub) as url:
        yield f"{url}/v1"


async def test_batches_keep_order_and_send_the_key(stub_url: str) -> None:
    calls.clear()
    embedder = OpenAIEmbedder(
        base_url=stub_url, model="m", dimension=8, api_key="sk-test", batch_size=2, timeout=5
    )
    texts = ["a", "bb", "ccc", "dddd", "eeeee"]
    vectors = await embedder.embed(texts)
    await embedder.aclose()

    assert [v[0] for v in vectors] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert all(len(v) == 8 for v in vectors)
    assert [len(c["input"]) for c in calls] == [2, 2, 1]  # type: ignore[arg-type]
    assert calls[0]["auth"] == b"Bearer sk-test"


async def test_a_model_with_another_dimension_is_a_clear_error(stub_url: str) -> None:
    embedder = OpenAIEmbedder(
        base_url=stub_url, model="wrong-dim", dimension=8, api_key=None, batch_size=8, timeout=5
    )
    with pytest.raises(EmbeddingError, match="5-dimensional vectors; EMBEDDING_DIM is 8"):
        await embedder.embed(["x"])
    await embedder.aclose()


async def test_an_unreachable_service_is_a_502_error() -> None:
    embedder = OpenAIEmbedder(
        base_url="http://127.0.0.1:1/v1",
        model="m",
        dimension=8,
        api_key=None,
        batch_size=8,
        timeout=2,
    )
    with pytest.raises(EmbeddingError) as info:
        await embedder.embed(["x"])
    assert info.value.status_code == 502
    await embedder.aclose()


def test_configured_dimension_must_match_the_column(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDDING_DIM", "768")
    with pytest.raises(SettingsError, match=r"EMBEDDING_DIM is 768 .* vector\(384\)"):
        create_app()


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
