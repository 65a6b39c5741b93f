"""Conversations and their history. The agent that answers is agent.py."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Sequence

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.pagination import PageParams, paged
from backend.modules.conversation.exceptions import ConversationNotFound, UnknownKnowledgeBase
from backend.modules.conversation.models import Conversation, Message
from backend.modules.conversation.schemas import ConversationCreate, ConversationUpdate
from backend.modules.knowledge_base.models import KnowledgeBase
from backend.modules.user.models import User

# Built once with bind parameters (see backend/core/pagination.py).
OWNED = select(Conversation).where(
    Conversation.id == bindparam("conversation_id"),
    Conversation.owner_id == bindparam("owner_id"),
)
NEWEST_FIRST = paged(
    select(Conversation)
    .where(Conversation.owner_id == bindparam("owner_id"))
    .order_by(Conversation.updated_at.desc(), Conversation.id)
)
HISTORY = paged(
    select(Message)
    .where(Message.conversation_id == bindparam("conversation_id"))
    .order_by(Message.seq)
)
OWNED_KNOWLEDGE_BASES = select(func.count()).where(
    KnowledgeBase.id.in_(bindparam("ids", expanding=True)),
    KnowledgeBase.owner_id == bindparam("owner_id"),
)


async def create(session: AsyncSession, *, owner: User, data: ConversationCreate) -> Conversation:
    ids = builtins.list(dict.fromkeys(data.knowledge_base_ids))
    if ids:
        owned = await session.scalar(OWNED_KNOWLEDGE_BASES, {"ids": ids, "owner_id": owner.id})
        if owned != len(ids):
            raise UnknownKnowledgeBase()
    conversation = Conversation(owner_id=owner.id, title=data.title, knowledge_base_ids=ids)
    session.add(conversation)
    await session.flush()
    return conversation


async def get(session: AsyncSession, *, owner: User, conversation_id: uuid.UUID) -> Conversation:
    """The owner's conversation; another user's is as absent as a missing one."""
    found = await session.scalar(OWNED, {"conversation_id": conversation_id, "owner_id": owner.id})
    if found is None:
        raise ConversationNotFound()
    return found


async def list(session: AsyncSession, *, owner: User, page: PageParams) -> Sequence[Conversation]:
    """The owner's conversations, the most recently active first."""
    return (await session.scalars(NEWEST_FIRST, page.bind(owner_id=owner.id))).all()


async def update(
    session: AsyncSession, *, conversation: Conversation, data: ConversationUpdate
) -> Conversation:
    conversation.title = data.title
    await session.flush()
    return conversation


async def delete(session: AsyncSession, *, conversation: Conversation) -> None:
    """The conversation, its messages and (by trigger) its agent state: all in this transaction."""
    await session.delete(conversation)
    await session.flush()


async def history(
    session: AsyncSession, *, conversation: Conversation, page: PageParams
) -> Sequence[Message]:
    """Its messages, oldest first."""
    bound = page.bind(conversation_id=conversation.id)
    return (await session.scalars(HISTORY, bound)).all()
