from __future__ import annotations

from fastapi import status

from backend.core.errors import AppError, NotFound


class ConversationNotFound(NotFound):
    detail = "Conversation not found"


class UnknownKnowledgeBase(AppError):
    """The body names a knowledge base the caller does not have: a bad field, not a missing
    URL (404)."""

    status_code = status.HTTP_422_UNPROCESSABLE_CONTENT
    detail = "knowledge_base_ids: you have no knowledge base with this id"
