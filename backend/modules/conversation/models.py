from __future__ import annotations

import datetime
import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    Date,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from backend.db.base import Base, Timestamps, UUIDPrimaryKey


class Conversation(UUIDPrimaryKey, Timestamps, Base):
    """A chat thread of one user, grounded in some of their knowledge bases. Its agent state is
    LangGraph's checkpoints under `thread_id` = its id; a trigger (revision 5d444fabc409)
    deletes them with it, however it goes (its owner's deletion included)."""

    __tablename__ = "conversations"

    owner_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    title: Mapped[str] = mapped_column(String(200))
    # The owner's knowledge bases it searches (checked when set; one deleted since is skipped).
    knowledge_base_ids: Mapped[list[uuid.UUID]] = mapped_column(ARRAY(Uuid()), server_default="{}")


class Message(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "messages"

    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE")
    )
    # The history's order (a question and its answer share a transaction, so their timestamps tie).
    seq: Mapped[int] = mapped_column(BigInteger, Identity())
    role: Mapped[str] = mapped_column(String(20))  # user | assistant
    content: Mapped[str] = mapped_column(Text)
    # An answer's sources: [{document_id, title, page, section, chunk_id}], in citation order.
    citations: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default="[]")
    # An answer's cost in the language model's tokens (none without a model; for the turn's
    # every model call, searches included).
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        # The history, oldest first, a page at a time.
        Index("ix_messages_conversation_id_seq", "conversation_id", "seq"),
    )


class Run(UUIDPrimaryKey, Timestamps, Base):
    """A turn the server is answering, or answered: its events let a client that lost its
    stream follow the rest from any replica. A conversation keeps its latest run only, and has
    at most one running; the process running it renews `updated_at` while it lives."""

    __tablename__ = "conversation_runs"

    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE")
    )
    status: Mapped[str] = mapped_column(String(20), server_default="running")  # done | failed

    __table_args__ = (
        Index(
            "uq_conversation_runs_running",
            "conversation_id",
            unique=True,
            postgresql_where=text("status = 'running'"),
        ),
        Index("ix_conversation_runs_conversation_id", "conversation_id"),
    )


class RunEvent(Base):
    """One server-sent event of a run, numbered from 1 (its SSE id is `<run id>:<seq>`)."""

    __tablename__ = "conversation_run_events"

    run_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversation_runs.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    event: Mapped[str] = mapped_column(String(20))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)


class TokenUsage(Base):
    """Language-model tokens a user spent on one UTC day: the daily limit, for every replica."""

    __tablename__ = "token_usage"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[datetime.date] = mapped_column(Date, primary_key=True)
    tokens: Mapped[int] = mapped_column(BigInteger)
