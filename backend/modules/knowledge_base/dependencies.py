from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from backend.core.config import Settings
from backend.core.errors import raises
from backend.core.state import BackgroundLoops, app_state, provided
from backend.db.session import Database, ReadSessionDep, SessionDep, release_connection
from backend.modules.file.storage import Storage
from backend.modules.knowledge_base import service
from backend.modules.knowledge_base.embeddings import Embedder, create_embedder
from backend.modules.knowledge_base.exceptions import KnowledgeBaseNotFound
from backend.modules.knowledge_base.ingestion import Ingestion, Worker
from backend.modules.knowledge_base.isolation import Parsers
from backend.modules.knowledge_base.models import KnowledgeBase
from backend.modules.knowledge_base.reembed import catch_up
from backend.modules.knowledge_base.rerank import Reranker
from backend.modules.knowledge_base.settings import KnowledgeBaseSettings
from backend.modules.user.dependencies import CurrentUser


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The module's start-up and shutdown: the embedder (an HTTP client, for a remote one),
    the reranker if configured, ingestion, and its worker when it runs in this process."""
    state = app_state(app)
    settings = state.get(KnowledgeBaseSettings)
    embedder = create_embedder(settings)
    state.provide(Embedder, embedder)
    reranker = Reranker.from_settings(settings)
    if reranker is not None:
        state.provide(Reranker, reranker)
    parsers = Parsers(settings)
    ingestion = Ingestion(
        state.get(Database),
        embedder=embedder,
        storage=state.get(Storage),
        parsers=parsers,
        settings=settings,
    )
    state.provide(Ingestion, ingestion)
    worker = catching_up = None
    if state.get(Settings).background_in_process:
        running = Worker(
            ingestion,
            concurrency=settings.ingestion_concurrency,
            poll=settings.ingestion_poll_seconds,
        )
        state.provide(Worker, running)
        state.get(BackgroundLoops)["ingestion"] = running
        worker = asyncio.create_task(running.run(), name="ingestion-worker")
        catching_up = asyncio.create_task(
            catch_up(state.get(Database).engine, embedder), name="reembed-catch-up"
        )
    try:
        yield
    finally:
        for task in (worker, catching_up):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        state.get(BackgroundLoops).pop("ingestion", None)
        state.remove(Worker)
        state.remove(Ingestion)
        state.remove(Embedder)
        state.remove(Reranker)
        parsers.close()
        await embedder.aclose()
        if reranker is not None:
            await reranker.aclose()


EmbedderDep = Annotated[Embedder, Depends(provided(Embedder))]


async def optional_reranker(request: Request) -> Reranker | None:
    """The reranker, or None when RERANK_URL is not set."""
    return app_state(request.app).find(Reranker)


RerankerDep = Annotated[Reranker | None, Depends(optional_reranker)]


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
