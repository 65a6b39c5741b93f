"""The knowledge-base module's settings: chunking, the embedder, search."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from fastapi import Depends
from pydantic import Field, SecretStr, field_validator, model_validator

from backend.core.config import AppSettings
from backend.core.state import provided
from backend.modules.knowledge_base.models import EMBEDDING_DIM

TextSearchLanguage = Literal[
    "simple", "arabic", "armenian", "basque", "catalan", "danish", "dutch", "english",
    "finnish", "french", "german", "greek", "hindi", "hungarian", "indonesian", "irish",
    "italian", "lithuanian", "nepali", "norwegian", "portuguese", "romanian", "russian",
    "serbian", "spanish", "swedish", "tamil", "turkish", "yiddish",
]  # fmt: skip


class KnowledgeBaseSettings(AppSettings):
    chunk_size: int = Field(default=1000, ge=50)
    chunk_overlap: int = Field(default=150, ge=0)
    max_document_bytes: int = Field(default=5 * 1024 * 1024, ge=1)
    # A PDF with more pages is refused (422) before any is read.
    max_document_pages: int = Field(default=500, ge=1)
    # A document whose text is longer fails (a 500-page book is about 1.5 M characters).
    max_document_chars: int = Field(default=3_000_000, ge=1)
    # Each file is parsed in a child process, stopped past this time or address space (the
    # document fails with the reason); the worker's own memory is not at stake either way.
    parse_timeout_seconds: float = Field(default=120.0, gt=0)
    parse_memory_mb: int = Field(default=384, ge=128)
    # `wordllama`: a small real model inside its package (offline); `hashing`: words and
    # trigrams hashed (deterministic, no model); `openai`: any OpenAI-compatible /embeddings.
    embedding_provider: Literal["wordllama", "hashing", "openai"] = "wordllama"
    embedding_dim: int = Field(default=256, ge=1)
    embedding_base_url: str = "https://api.openai.com/v1"
    embedding_model: str = "text-embedding-3-small"
    embedding_api_key: SecretStr | None = None
    embedding_batch_size: int = Field(default=64, ge=1)
    embedding_timeout: float = Field(default=30.0, gt=0)
    # A 429, a 5xx or a dropped connection is retried this many times, with backoff.
    embedding_retries: int = Field(default=4, ge=0, le=10)
    # Sent as `dimensions` when set, for models that can shorten their vectors (OpenAI's
    # text-embedding-3: set it to EMBEDDING_DIM). Unset, not sent: vLLM refuses it for most models.
    embedding_request_dimensions: int | None = Field(default=None, ge=1)
    # Put before each text, for models trained with them (e5: "query: " and "passage: ";
    # nomic-embed: "search_query: " and "search_document: ").
    embedding_query_prefix: str = ""
    embedding_passage_prefix: str = ""
    # Optional reranking (a cross-encoder behind HTTP): off while RERANK_URL is empty. `tei`:
    # Hugging Face TEI's POST /rerank; `cohere`: POST /rerank in Cohere's shape (Jina, vLLM,
    # Infinity). A search reranks this many candidates and keeps its top_k.
    rerank_url: str = ""
    rerank_api: Literal["tei", "cohere"] = "tei"
    rerank_model: str = ""
    rerank_api_key: SecretStr | None = None
    rerank_timeout: float = Field(default=10.0, gt=0)
    rerank_candidates: int = Field(default=20, ge=1, le=200)
    ingestion_concurrency: int = Field(default=2, ge=1, le=64)
    # Short text bodies (64 Ki characters at most) claimed and stored together, in one transaction.
    ingestion_batch_documents: int = Field(default=32, ge=1, le=500)
    ingestion_max_attempts: int = Field(default=5, ge=1, le=50)
    ingestion_poll_seconds: float = Field(default=0.5, gt=0, le=60)
    # A claim not renewed for this long is taken over (its worker died); renewed while it works.
    ingestion_lease_seconds: float = Field(default=60.0, ge=1, le=3600)
    # Per user, over all their knowledge bases (in PostgreSQL, so every replica counts the same):
    # adding a document past these answers 413 (documents, chunks) or 429 (queued).
    max_documents_per_user: int = Field(default=10_000, ge=1)
    max_chunks_per_user: int = Field(default=1_000_000, ge=1)
    max_queued_documents_per_user: int = Field(default=1_000, ge=1)
    # A search stops after this (503 with Retry-After), and a user runs at most this many at
    # once on each replica (429): one user's heavy queries cannot take the pool from the rest.
    search_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    search_concurrency_per_user: int = Field(default=4, ge=1, le=100)
    # Knowledge bases up to this many chunks are searched exactly; larger ones use HNSW.
    search_exact_max_chunks: int = Field(default=10_000, ge=0)
    # 200 with the index's ef_construction=200: recall@10 0.999 at p50 9-10 ms for a 50,000-chunk
    # knowledge base in a 150,000-chunk table (README, "Filtered search"); 150: 0.9975, 9.2 ms;
    # 100: 0.985, 8-9 ms.
    search_ef_search: int = Field(default=200, ge=1, le=1000)
    # pgvector's iterative index scan: keeps walking the graph until top_k rows pass the filter.
    search_iterative_scan: Literal["relaxed_order", "strict_order", "off"] = "relaxed_order"
    # The full-text configuration new chunks are indexed with and queries parsed with: one of
    # PostgreSQL's own (`simple` only lower-cases; the others also stem and drop stop words).
    search_language: TextSearchLanguage = "english"

    @field_validator("embedding_request_dimensions", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check_consistency(self) -> Self:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("CHUNK_OVERLAP must be smaller than CHUNK_SIZE")
        if self.embedding_provider == "wordllama" and self.embedding_dim not in WORDLLAMA_DIMS:
            raise ValueError(
                f"EMBEDDING_DIM is {self.embedding_dim}; the wordllama model makes "
                f"{', '.join(map(str, WORDLLAMA_DIMS))}-dimensional vectors"
            )
        return self._check_column()

    def _check_column(self) -> Self:
        if self.embedding_dim != EMBEDDING_DIM:
            raise ValueError(
                f"EMBEDDING_DIM is {self.embedding_dim} but the chunks.embedding column holds "
                f"vector({EMBEDDING_DIM}): set EMBEDDING_DIM={EMBEDDING_DIM}, or change the "
                f"column with a migration and re-embed (README: Changing the embedding model)"
            )
        return self


# The dimensions WordLlama's l2_supercat model ships (256) or truncates to.
WORDLLAMA_DIMS = (64, 128, 256)


KnowledgeBaseSettingsDep = Annotated[
    KnowledgeBaseSettings, Depends(provided(KnowledgeBaseSettings))
]
