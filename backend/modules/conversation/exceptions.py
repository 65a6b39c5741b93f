from __future__ import annotations

from fastapi import status

from backend.core.errors import AppError, Conflict, NotFound, TooManyRequests, Unavailable


class ConversationNotFound(NotFound):
    detail = "Conversation not found"


class UnknownKnowledgeBase(AppError):
    """The body names a knowledge base the caller does not have: a bad field, not a missing
    URL (404)."""

    status_code = status.HTTP_422_UNPROCESSABLE_CONTENT
    detail = "knowledge_base_ids: you have no knowledge base with this id"


class TurnInProgress(Conflict):
    detail = (
        "The agent is still answering this conversation's last question: follow it at "
        "GET .../events, or ask again once it is done"
    )


class RunNotFound(NotFound):
    detail = (
        "No such turn in this conversation (only its latest turn can be followed; every finished "
        "answer is in GET .../messages)"
    )


class DailyTokensSpent(TooManyRequests):
    """The caller has spent MODEL_DAILY_TOKENS_PER_USER today (UTC): until midnight UTC."""

    detail = "You have used today's language-model tokens"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"You have used today's language-model tokens; they renew at midnight UTC, in "
            f"{retry_after} seconds",
            retry_after=retry_after,
        )


class ModelFailed(AppError):
    """The language model could not answer (after retries): the turn stored nothing."""

    status_code = status.HTTP_502_BAD_GATEWAY
    detail = "The language model could not answer; nothing was stored"


class AgentFailed(AppError):
    """The agent failed for a reason of the server's own (logged): the turn stored nothing."""

    status_code = status.HTTP_500_INTERNAL_SERVER_ERROR
    detail = "The agent failed; nothing was stored"


class RunInterrupted(Unavailable):
    detail = (
        "The server answering this turn stopped before it finished; nothing was stored: ask again"
    )
