from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI
from sqlalchemy import select

from backend.core.errors import raises
from backend.core.state import ReadinessChecks, app_state, provided
from backend.core.tracing import Tracing
from backend.db.session import Database, ReadSessionDep, SessionDep, release_connection
from backend.modules.conversation import service
from backend.modules.conversation.agent import Agent, Passage, Search, build_graph
from backend.modules.conversation.exceptions import ConversationNotFound
from backend.modules.conversation.model import ChatModel
from backend.modules.conversation.models import Conversation
from backend.modules.conversation.runs import Runs
from backend.modules.conversation.settings import ConversationSettings
from backend.modules.knowledge_base import search as searching
from backend.modules.knowledge_base.embeddings import Embedder
from backend.modules.knowledge_base.models import Document, KnowledgeBase
from backend.modules.knowledge_base.settings import KnowledgeBaseSettings
from backend.modules.user.dependencies import CurrentUser


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The agent: its graph, the language model if one is configured, LangGraph's checkpointer
    and the checkpointer's own pool; the runs answering turns. `/readyz` checks that the
    checkpointer's tables are where the installed LangGraph expects them."""
    state = app_state(app)

    def database() -> Database:  # as it is when used (tests swap it)
        return state.get(Database)

    settings = state.get(ConversationSettings)
    model = chat_model(settings, state.find(Tracing))
    search = knowledge_base_search(
        database,
        state.get(Embedder),
        state.get(KnowledgeBaseSettings),
        settings.conversation_passages,
    )
    agent = await Agent.start(
        database().engine.url,
        pool_size=settings.checkpointer_pool_size,
        graph=lambda checkpointer: build_graph(
            search,
            checkpointer,
            model,
            max_searches=settings.agent_max_tool_calls,
            history_messages=settings.agent_history_messages,
        ),
    )
    runs = Runs(
        database,
        agent,
        daily_tokens=settings.model_daily_tokens_per_user if model else 0,
    )
    state.provide(Agent, agent)
    state.provide(Runs, runs)
    state.get(ReadinessChecks)["agent state"] = agent.check_schema
    try:
        yield
    finally:
        state.get(ReadinessChecks).pop("agent state", None)
        state.remove(Runs)
        state.remove(Agent)
        try:
            await runs.close()
        finally:
            await agent.close()
            if model is not None:
                await model.aclose()


def chat_model(settings: ConversationSettings, tracing: Tracing | None) -> ChatModel | None:
    """The configured language model, or None (the agent then answers extractively)."""
    if not settings.model_base_url:
        return None
    key = settings.model_api_key
    return ChatModel(
        base_url=settings.model_base_url,
        model=settings.model_name,
        api_key=key.get_secret_value() if key else None,
        timeout=settings.model_timeout,
        retries=settings.model_retries,
        max_tokens=settings.model_max_tokens,
        tracer=tracing.provider.get_tracer(__name__) if tracing else None,
    )


def knowledge_base_search(
    database: Callable[[], Database],
    embedder: Embedder,
    settings: KnowledgeBaseSettings,
    passages: int,
) -> Search:
    """The agent's search: each knowledge base's hybrid search, the best `passages` of all, on
    the app's database as it is when asked (`database()`)."""

    async def search(question: str, kb_ids: list[uuid.UUID]) -> list[Passage]:
        async with database().read_sessionmaker() as session:
            kbs = (
                await session.scalars(select(KnowledgeBase).where(KnowledgeBase.id.in_(kb_ids)))
            ).all()
            found = [
                result
                for kb in kbs
                for result in await searching.search(
                    session,
                    kb=kb,
                    query=question,
                    top_k=passages,
                    embedder=embedder,
                    settings=settings,
                )
            ]
            best = sorted(found, key=lambda r: r.score, reverse=True)[:passages]
            if not best:
                return []
            cited = select(Document.id, Document.title).where(
                Document.id.in_({r.document_id for r in best})
            )
            titles = {row.id: row.title for row in await session.execute(cited)}
        return [
            Passage(
                text=r.text,
                document_id=str(r.document_id),
                title=titles.get(r.document_id, ""),
                page=r.page,
                section=r.section,
                chunk_id=str(r.chunk_id),
            )
            for r in best
        ]

    return search


RunsDep = Annotated[Runs, Depends(provided(Runs))]


@raises(ConversationNotFound)
async def owned_conversation(
    conversation_id: uuid.UUID, session: ReadSessionDep, user: CurrentUser
) -> Conversation:
    """Load the caller's conversation or 404, and hand the connection back."""
    conversation = await service.get(session, owner=user, conversation_id=conversation_id)
    await release_connection(session)
    return conversation


OwnedConversation = Annotated[Conversation, Depends(owned_conversation)]


async def owned_conversation_for_update(
    conversation: OwnedConversation, session: SessionDep
) -> Conversation:
    """The caller's conversation in the request's write session (for handlers that change it)."""
    return await session.merge(conversation, load=False)


OwnedConversationForUpdate = Annotated[Conversation, Depends(owned_conversation_for_update)]
