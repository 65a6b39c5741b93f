from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Identity, Index, String, Text, Uuid
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

    __table_args__ = (
        # The history, oldest first, a page at a time.
        Index("ix_messages_conversation_id_seq", "conversation_id", "seq"),
    )
