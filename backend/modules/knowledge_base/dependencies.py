from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Request

from backend.core.errors import raises
from backend.db.session import ReadSessionDep, SessionDep, release_connection
from backend.modules.knowledge_base import service
from backend.modules.knowledge_base.embeddings import Embedder
from backend.modules.knowledge_base.exceptions import KnowledgeBaseNotFound
from backend.modules.knowledge_base.models import KnowledgeBase
from backend.modules.user.dependencies import CurrentUser


def get_embedder(request: Request) -> Embedder:
    embedder: Embedder = request.app.state.embedder
    return embedder


EmbedderDep = Annotated[Embedder, Depends(get_embedder)]


@raises(KnowledgeBaseNotFound)
async def owned_knowledge_base(
    kb_id: uuid.UUID, session: ReadSessionDep, user: CurrentUser
) -> KnowledgeBase:
    """Load the caller's knowledge base or 404, and hand the connection back."""
    kb = await service.get(session, owner=user, kb_id=kb_id)
    await release_connection(session)
    return kb


OwnedKnowledgeBase = Annotated[KnowledgeBase, Depends(owned_knowledge_base)]


async def owned_knowledge_base_for_update(
    kb: OwnedKnowledgeBase, session: SessionDep
) -> KnowledgeBase:
    """The caller's knowledge base in the request's write session (for handlers that change it)."""
    return await session.merge(kb, load=False)


OwnedKnowledgeBaseForUpdate = Annotated[KnowledgeBase, Depends(owned_knowledge_base_for_update)]
