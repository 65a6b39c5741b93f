from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from backend.core.schemas import InputModel

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]


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


class DocumentCreate(InputModel):
    """Either `text` (with a `title`) or `file_id` of an uploaded text/markdown file."""

    title: Title | None = None
    text: str | None = None
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
    chunk_count: int
    char_count: int
    created_at: datetime


class SearchQuery(InputModel):
    query: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
    top_k: int = Field(default=5, ge=1, le=50)


class SearchResult(BaseModel):
    chunk_id: uuid.UUID
    document_id: uuid.UUID
    text: str
    score: float


class SearchResults(BaseModel):
    results: list[SearchResult]
