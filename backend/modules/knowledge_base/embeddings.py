"""Text embedders behind one interface, chosen by settings."""

from __future__ import annotations

import re
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
import numpy as np
from anyio import to_thread
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)
from tenacity.wait import wait_base

from backend.modules.knowledge_base.exceptions import EmbeddingError
from backend.modules.knowledge_base.settings import WORDLLAMA_DIMS, KnowledgeBaseSettings

TextKind = Literal["passage", "query"]


class Embedder(Protocol):
    dimension: int
    # True: computed in this process, in moments (ingestion embeds while PostgreSQL writes);
    # False: a remote service, which may take minutes (ingestion asks it before locking).
    local: bool

    async def embed(self, texts: Sequence[str], *, kind: TextKind = "passage") -> list[list[float]]:
        """One L2-normalised vector of `dimension` floats per text, in order. `kind`: what is
        stored (`passage`) or searched with (`query`); some models embed them differently."""
        ...

    async def aclose(self) -> None:
        """Release what the embedder holds (an HTTP client's connections)."""
        ...


_WORD = re.compile(r"\w+", re.UNICODE)


class HashingEmbedder:
    """Offline and deterministic: signed feature hashing of words and character trigrams.

    Texts sharing words (or word pieces: "migrate"/"migration") get similar vectors. No model,
    no download; good enough to develop and test retrieval end to end.
    """

    # Features of common words are cached (embedding is ~5x faster warm). The bound is in bytes
    # by construction: at most CACHE_WORDS entries, none for words longer than CACHE_WORD_CHARS
    # (a document of distinct long words cannot grow it): 33 MB when full of 32-character words
    # (measured with tracemalloc), a few MB for real text.
    CACHE_WORDS = 32_768
    CACHE_WORD_CHARS = 32
    local = True

    def __init__(self, dimension: int) -> None:
        self.dimension = dimension
        self._cached_features = lru_cache(maxsize=self.CACHE_WORDS)(self._word_features)

    async def aclose(self) -> None:
        """Nothing to release."""

    def _features(self, word: str) -> tuple[np.ndarray, np.ndarray]:
        if len(word) > self.CACHE_WORD_CHARS:
            return self._word_features(word)
        return self._cached_features(word)

    def _word_features(self, word: str) -> tuple[np.ndarray, np.ndarray]:
        grams = [f"w:{word}"]
        padded = f"<{word}>"
        grams += [padded[i : i + 3] for i in range(len(padded) - 2)]
        hashes = np.array([zlib.crc32(g.encode()) for g in grams], dtype=np.uint32)
        index = (hashes % self.dimension).astype(np.intp)
        # The word itself weighs as much as all its trigrams together.
        weight = np.full(len(grams), 1.0 / max(len(grams) - 1, 1))
        weight[0] = 1.0
        sign = np.where((hashes >> 31) & 1, -1.0, 1.0) * weight
        return index, sign

    def _embed_one(self, text: str) -> list[float]:
        lowered = text.lower()
        # Text without a word character ("?!", "---") is hashed by its symbols instead: a zero
        # vector has no cosine distance, and search would answer NaN.
        counts = Counter(_WORD.findall(lowered) or lowered.split())
        if not counts:
            return [0.0] * self.dimension
        features = [self._features(word) for word in counts]
        # One scatter-add for the whole text: each word's features times its count.
        index = np.concatenate([f[0] for f in features])
        weight = np.concatenate([f[1] * n for f, n in zip(features, counts.values(), strict=True)])
        vector: np.ndarray = np.bincount(index, weights=weight, minlength=self.dimension)
        norm = float(np.linalg.norm(vector))
        result: list[float] = (vector / norm if norm > 0 else vector).tolist()
        return result

    # Up to this many characters (a search query) are embedded on the event loop: tens of
    # microseconds, less than handing them to a thread and back.
    INLINE_CHARS = 2_000

    async def embed(self, texts: Sequence[str], *, kind: TextKind = "passage") -> list[list[float]]:
        if sum(map(len, texts)) <= self.INLINE_CHARS:
            return [self._embed_one(text) for text in texts]
        # CPU work: a long document would otherwise stall every other request on this worker.
        return await to_thread.run_sync(lambda: [self._embed_one(text) for text in texts])


class WordLlamaEmbedder:
    """The default: a small real model that runs here, offline. WordLlama's `l2_supercat` (token
    embeddings distilled from large language models, averaged) ships its weights (16 MB) in its
    PyPI wheel: nothing is downloaded at run time. 256 dimensions, or 128 or 64 (Matryoshka
    truncation); about 2,500 chunks of 900 characters a second on one core.
    """

    local = True

    def __init__(self, dimension: int) -> None:
        if dimension not in WORDLLAMA_DIMS:
            raise ValueError(f"The wordllama model makes {WORDLLAMA_DIMS} dimensions: {dimension}?")
        self.dimension = dimension
        self._model = _wordllama(dimension)

    async def aclose(self) -> None:
        """Nothing to release: the model is shared by the process."""

    def _embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors: list[list[float]] = self._model.embed(list(texts), norm=True).tolist()
        return vectors

    async def embed(self, texts: Sequence[str], *, kind: TextKind = "passage") -> list[list[float]]:
        if sum(map(len, texts)) <= HashingEmbedder.INLINE_CHARS:
            return self._embed(texts)
        return await to_thread.run_sync(self._embed, texts)


@cache
def _wordllama(dimension: int) -> Any:
    """The model, loaded once per process (0.2 s) from the files inside the package. WordLlama
    looks for its tokenizer in a folder named differently from the one it ships: point its cache
    at the package and forbid downloads, so a missing file is an error, never a fetch."""
    import wordllama

    package = Path(wordllama.__file__).parent
    trunc = None if dimension == 256 else dimension
    return wordllama.WordLlama.load(
        "l2_supercat", cache_dir=package, dim=256, trunc_dim=trunc, disable_download=True
    )


class OpenAIEmbedder:
    """Any OpenAI-compatible `/embeddings` endpoint (OpenAI, vLLM, Ollama, TEI, ...)."""

    local = False

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        dimension: int,
        api_key: str | None,
        batch_size: int,
        timeout: float,
        request_dimensions: int | None = None,
        prefixes: Mapping[TextKind, str] | None = None,
        retries: int = 4,
        max_backoff: float = 8.0,
    ) -> None:
        self.dimension = dimension
        self.model = model
        self.batch_size = batch_size
        self.request_dimensions = request_dimensions
        self.prefixes = dict(prefixes or {})
        self.retries = retries
        self.max_backoff = max_backoff
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/", headers=headers, timeout=timeout
        )

    async def embed(self, texts: Sequence[str], *, kind: TextKind = "passage") -> list[list[float]]:
        prefix = self.prefixes.get(kind, "")
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = [prefix + text for text in texts[start : start + self.batch_size]]
            vectors += await self._batch(batch)
        return vectors

    async def _batch(self, texts: list[str]) -> list[list[float]]:
        payload: dict[str, object] = {"model": self.model, "input": texts}
        if self.request_dimensions is not None:  # vLLM refuses it for most models
            payload["dimensions"] = self.request_dimensions
        try:
            response = await post_retrying(
                self._client, "embeddings", payload, self.retries, self.max_backoff
            )
            data = sorted(response.json()["data"], key=lambda item: item["index"])
            vectors = [[float(x) for x in item["embedding"]] for item in data]
        except httpx.HTTPError as exc:
            # Never its text: httpx names the URL, and a URL can hold credentials.
            raise EmbeddingError(f"The embedding service failed ({http_cause(exc)})") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise EmbeddingError(f"The embedding service answered malformed JSON ({exc})") from None
        if len(vectors) != len(texts):
            raise EmbeddingError(
                f"The embedding service returned {len(vectors)} vectors for {len(texts)} texts"
            )
        for vector in vectors:
            if len(vector) != self.dimension:
                raise EmbeddingError(
                    f"The embedding model returned {len(vector)}-dimensional vectors; "
                    f"EMBEDDING_DIM is {self.dimension}"
                )
        return vectors

    async def aclose(self) -> None:
        await self._client.aclose()


def http_cause(exc: httpx.HTTPError) -> str:
    """What went wrong with a request, without its URL."""
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return type(exc).__name__


async def post_retrying(
    client: httpx.AsyncClient,
    path: str,
    payload: object,
    retries: int,
    max_backoff: float = 8.0,
) -> httpx.Response:
    """POST `payload` as JSON; a 429, a 5xx or a dropped connection is retried with exponential
    backoff and jitter (at least what Retry-After asks), `retries` times. Raises httpx's error
    for the last failure, or at once for any other 4xx."""
    async for attempt in retrying(retries, max_backoff):
        with attempt:
            response = await client.post(path, json=payload)
            response.raise_for_status()
    return response


def retrying(retries: int, max_backoff: float = 8.0) -> AsyncRetrying:
    """Attempts for a call to a remote model: a 429, a 5xx (raised as httpx's
    HTTPStatusError) or a dropped connection is retried with exponential backoff and jitter
    (at least what Retry-After asks), `retries` times; the last failure is raised."""
    return AsyncRetrying(
        stop=stop_after_attempt(retries + 1),
        wait=_RetryAfter(wait_random_exponential(multiplier=0.25, max=max_backoff)),
        retry=retry_if_exception(_transient),
        reraise=True,
    )


def _transient(exc: BaseException) -> bool:
    """Worth another try: rate limited, the server's own failure, or the network's."""
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        return status == 429 or status >= 500
    return isinstance(exc, httpx.TransportError)


class _RetryAfter(wait_base):
    """The backoff, or the server's Retry-After when it asks for longer (capped at a minute)."""

    def __init__(self, backoff: wait_base) -> None:
        self.backoff = backoff

    def __call__(self, retry_state: RetryCallState) -> float:
        wait = float(self.backoff(retry_state))
        outcome = retry_state.outcome
        failure = outcome.exception() if outcome is not None else None
        if isinstance(failure, httpx.HTTPStatusError):
            asked = failure.response.headers.get("retry-after", "")
            if asked.isdigit():
                wait = max(wait, min(float(asked), 60.0))
        return wait


def create_embedder(settings: KnowledgeBaseSettings) -> Embedder:
    if settings.embedding_provider == "openai":
        key = settings.embedding_api_key
        return OpenAIEmbedder(
            base_url=settings.embedding_base_url,
            model=settings.embedding_model,
            dimension=settings.embedding_dim,
            api_key=key.get_secret_value() if key else None,
            batch_size=settings.embedding_batch_size,
            timeout=settings.embedding_timeout,
            request_dimensions=settings.embedding_request_dimensions,
            prefixes={
                "query": settings.embedding_query_prefix,
                "passage": settings.embedding_passage_prefix,
            },
            retries=settings.embedding_retries,
        )
    if settings.embedding_provider == "wordllama":
        return WordLlamaEmbedder(settings.embedding_dim)
    return HashingEmbedder(settings.embedding_dim)
