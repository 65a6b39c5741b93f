from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Request

from backend.core.errors import raises
from backend.db.session import SessionDep
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
    kb_id: uuid.UUID, session: SessionDep, user: CurrentUser
) -> KnowledgeBase:
    """Load the caller's knowledge base or 404."""
    return await service.get(session, owner=user, kb_id=kb_id)


OwnedKnowledgeBase = Annotated[KnowledgeBase, Depends(owned_knowledge_base)]
