from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from backend.core.pagination import Page
from backend.core.schemas import InputModel, not_blank

Title = Annotated[str, *not_blank(200)]
Content = Annotated[str, *not_blank(8000)]
# A conversation searches at most this many knowledge bases.
MAX_KNOWLEDGE_BASES = 10


class ConversationCreate(InputModel):
    title: Title
    knowledge_base_ids: list[uuid.UUID] = Field(default=[], max_length=MAX_KNOWLEDGE_BASES)


class ConversationUpdate(InputModel):
    title: Title


class ConversationRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    title: str
    knowledge_base_ids: list[uuid.UUID]
    created_at: datetime
    updated_at: datetime


ConversationPage = Page[ConversationRead]


class MessageCreate(InputModel):
    content: Content


class Citation(BaseModel):
    """Where a passage of an answer came from: `[n]` in the answer is the n-th citation."""

    document_id: uuid.UUID
    title: str
    page: int | None
    section: str | None
    chunk_id: uuid.UUID


class MessageRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    role: Literal["user", "assistant"]
    content: str
    citations: list[Citation]
    # The language model's tokens this answer cost (null for a question, or without a model).
    prompt_tokens: int | None
    completion_tokens: int | None
    created_at: datetime


MessagePage = Page[MessageRead]


class Exchange(BaseModel):
    """A question and the agent's answer, both stored in the history."""

    question: MessageRead
    answer: MessageRead
