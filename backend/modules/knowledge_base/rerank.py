"""Optional reranking of search results by a cross-encoder behind HTTP: Hugging Face TEI's
`/rerank`, or the Cohere shape that Jina, vLLM and Infinity also serve. Off unless RERANK_URL
is set; then a search fetches RERANK_CANDIDATES chunks and returns the top_k the reranker
scores highest."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from backend.modules.knowledge_base.embeddings import post_retrying
from backend.modules.knowledge_base.exceptions import RerankError
from backend.modules.knowledge_base.schemas import SearchResult
from backend.modules.knowledge_base.settings import KnowledgeBaseSettings


class Reranker:
    def __init__(
        self,
        *,
        url: str,
        api: str,
        model: str,
        api_key: str | None,
        timeout: float,
        retries: int,
        max_backoff: float = 8.0,
    ) -> None:
        self.api = api
        self.model = model
        self.retries = retries
        self.max_backoff = max_backoff
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    @classmethod
    def from_settings(cls, settings: KnowledgeBaseSettings) -> Reranker | None:
        if not settings.rerank_url:
            return None
        key = settings.rerank_api_key
        return cls(
            url=settings.rerank_url,
            api=settings.rerank_api,
            model=settings.rerank_model,
            api_key=key.get_secret_value() if key else None,
            timeout=settings.rerank_timeout,
            retries=settings.embedding_retries,
        )

    async def rerank(
        self, query: str, results: Sequence[SearchResult], top_k: int
    ) -> list[SearchResult]:
        """`results` ordered by the reranker's relevance, the first `top_k`, scored by it."""
        if not results:
            return []
        texts = [result.text for result in results]
        payload: dict[str, Any]
        if self.api == "tei":
            payload = {"query": query, "texts": texts, "truncate": True}
        else:
            payload = {"query": query, "documents": texts, "top_n": len(texts)}
            if self.model:
                payload["model"] = self.model
        try:
            response = await post_retrying(
                self._client, "rerank", payload, self.retries, self.max_backoff
            )
            body = response.json()
            # TEI answers a list; Cohere's shape is {"results": [...]} with relevance_score.
            ranked = body if isinstance(body, list) else body["results"]
            scores = {
                int(item["index"]): float(item.get("score", item.get("relevance_score")))
                for item in ranked
            }
        except httpx.HTTPError as exc:
            raise RerankError(f"The reranking service failed: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise RerankError(f"The reranking service answered malformed JSON ({exc})") from None
        if set(scores) != set(range(len(results))):
            raise RerankError(f"The reranking service scored {len(scores)} of {len(results)} texts")
        order = sorted(scores, key=lambda index: -scores[index])[:top_k]
        return [results[index].model_copy(update={"score": scores[index]}) for index in order]

    async def aclose(self) -> None:
        await self._client.aclose()
