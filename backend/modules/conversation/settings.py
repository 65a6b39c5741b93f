from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from pydantic import Field

from backend.core.config import AppSettings
from backend.core.state import provided


class ConversationSettings(AppSettings):
    # LangGraph's checkpointer talks to PostgreSQL through psycopg (this app uses asyncpg): its
    # own pool, at most this many connections per process, beside DB_POOL_SIZE.
    checkpointer_pool_size: int = Field(default=2, ge=1, le=100)
    # Passages the agent takes from the conversation's knowledge bases for one answer.
    conversation_passages: int = Field(default=4, ge=1, le=20)


ConversationSettingsDep = Annotated[ConversationSettings, Depends(provided(ConversationSettings))]
