from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from backend.core.pagination import Page
from backend.core.schemas import InputModel, not_blank

Name = Annotated[str, *not_blank(200)]
Title = Annotated[str, *not_blank(300)]
Text = Annotated[str, *not_blank()]
Query = Annotated[str, *not_blank(2000)]


class KnowledgeBaseCreate(InputModel):
    name: Name
    description: str | None = Field(default=None, max_length=2000)


class KnowledgeBaseUpdate(InputModel):
    name: Name | None = None
    description: str | None = Field(default=None, max_length=2000)


class KnowledgeBaseRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    description: str | None
    chunk_count: int
    created_at: datetime
    updated_at: datetime


KnowledgeBasePage = Page[KnowledgeBaseRead]


class DocumentCreate(InputModel):
    """Either `text` (with a `title`) or `file_id` of an uploaded text/markdown file."""

    # The published schema says it as the validator below does: one of the two shapes.
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {
                    "required": ["title", "text"],
                    "properties": {
                        "title": {"type": "string"},
                        "text": {"type": "string"},
                        "file_id": {"type": "null"},
                    },
                },
                {
                    "required": ["file_id"],
                    "properties": {"file_id": {"type": "string"}, "text": {"type": "null"}},
                },
            ]
        }
    )

    title: Title | None = None
    text: Text | None = None
    file_id: uuid.UUID | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.text is None) == (self.file_id is None):
            raise ValueError("give either text or file_id")
        if self.text is not None and self.title is None:
            raise ValueError("a text document needs a title")
        return self


class DocumentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    knowledge_base_id: uuid.UUID
    title: str
    source_file_id: uuid.UUID | None
    # pending (queued) -> processing -> ready (searchable), or failed (`error` says why).
    status: Literal["pending", "processing", "ready", "failed"]
    error: str | None
    chunk_count: int
    char_count: int
    created_at: datetime


DocumentPage = Page[DocumentRead]


SearchMode = Literal["vector", "keyword", "hybrid"]


# Documents one request may add at once (POST .../document-batches).
MAX_BATCH_DOCUMENTS = 1000


class DocumentBatchCreate(InputModel):
    documents: list[DocumentCreate] = Field(min_length=1, max_length=MAX_BATCH_DOCUMENTS)


class DocumentBatchItem(BaseModel):
    """One document of a batch, in the request's order: queued (`pending`, with its `id`), or
    `refused` with the error it would have had alone (`code`, `detail`)."""

    id: uuid.UUID | None
    status: Literal["pending", "refused"]
    code: str | None = None
    detail: str | None = None


class DocumentBatchRead(BaseModel):
    documents: list[DocumentBatchItem]


class SearchQuery(InputModel):
    query: Query
    top_k: int = Field(default=5, ge=1, le=50)
    # hybrid: vector and keyword rankings fused (the default); vector: by meaning only;
    # keyword: full-text only (words, "phrases", -exclusions), no embedding call.
    mode: SearchMode = "hybrid"


class SearchResult(BaseModel):
    chunk_id: uuid.UUID
    document_id: uuid.UUID
    text: str
    # Where the chunk came from: its page (PDFs, from 1) and heading path ("Guide > Install").
    page: int | None = None
    section: str | None = None
    # vector: cosine similarity; keyword: BM25; hybrid: the fused reciprocal-rank score.
    # Higher is better within one mode; scores of different modes do not compare.
    score: float


class SearchResults(BaseModel):
    results: list[SearchResult]
