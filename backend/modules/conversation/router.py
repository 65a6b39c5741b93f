from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from sqlalchemy import func

from backend.core.errors import error_responses
from backend.core.pagination import PageDep
from backend.db.session import ReadSessionDep, SessionDep
from backend.modules.conversation import service
from backend.modules.conversation.dependencies import (
    AgentDep,
    OwnedConversation,
    OwnedConversationForUpdate,
    lifespan,
)
from backend.modules.conversation.exceptions import ConversationNotFound, UnknownKnowledgeBase
from backend.modules.conversation.models import Message
from backend.modules.conversation.schemas import (
    ConversationCreate,
    ConversationPage,
    ConversationRead,
    ConversationUpdate,
    Exchange,
    MessageCreate,
    MessagePage,
    MessageRead,
)
from backend.modules.user.dependencies import CurrentUser

router = APIRouter(prefix="/conversations", tags=["conversations"], lifespan=lifespan)


@router.post(
    "",
    response_model=ConversationRead,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(UnknownKnowledgeBase),
)
async def create_conversation(
    request: Request,
    response: Response,
    session: SessionDep,
    user: CurrentUser,
    data: ConversationCreate,
) -> ConversationRead:
    """A conversation, grounded in some of the caller's knowledge bases (`knowledge_base_ids`)."""
    conversation = await service.create(session, owner=user, data=data)
    location = request.url_for("get_conversation", conversation_id=conversation.id)
    response.headers["Location"] = str(location.path)
    return ConversationRead.model_validate(conversation)


@router.get("", response_model=ConversationPage, status_code=status.HTTP_200_OK)
async def list_conversations(
    session: ReadSessionDep, user: CurrentUser, page: PageDep
) -> ConversationPage:
    """The caller's conversations, the most recently active first, a page at a time."""
    return ConversationPage.of(await service.list(session, owner=user, page=page), page)


@router.get(
    "/{conversation_id}",
    response_model=ConversationRead,
    status_code=status.HTTP_200_OK,
    responses=error_responses(ConversationNotFound),
)
async def get_conversation(conversation: OwnedConversation) -> ConversationRead:
    return ConversationRead.model_validate(conversation)


@router.patch(
    "/{conversation_id}",
    response_model=ConversationRead,
    status_code=status.HTTP_200_OK,
    responses=error_responses(ConversationNotFound),
)
async def rename_conversation(
    session: SessionDep, conversation: OwnedConversationForUpdate, data: ConversationUpdate
) -> ConversationRead:
    updated = await service.update(session, conversation=conversation, data=data)
    return ConversationRead.model_validate(updated)


@router.delete(
    "/{conversation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(ConversationNotFound),
)
async def delete_conversation(
    session: SessionDep, conversation: OwnedConversationForUpdate
) -> None:
    """The conversation, its messages and its agent state (LangGraph's checkpoints)."""
    await service.delete(session, conversation=conversation)


@router.get(
    "/{conversation_id}/messages",
    response_model=MessagePage,
    status_code=status.HTTP_200_OK,
    responses=error_responses(ConversationNotFound),
)
async def list_messages(
    session: ReadSessionDep, conversation: OwnedConversation, page: PageDep
) -> MessagePage:
    """The conversation's history, oldest first, a page at a time."""
    return MessagePage.of(
        await service.history(session, conversation=conversation, page=page), page
    )


@router.post(
    "/{conversation_id}/messages",
    response_model=Exchange,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(ConversationNotFound),
)
async def ask(
    session: SessionDep,
    conversation: OwnedConversationForUpdate,
    agent: AgentDep,
    data: MessageCreate,
) -> Exchange:
    """Ask the agent: it searches the conversation's knowledge bases and answers, citing its
    sources (`[n]` in the answer is `citations[n-1]`). The question and the answer are added
    to the history together, once the agent has answered (the request holds no database
    connection while it works; if it fails, neither is stored)."""
    turn = await agent.ask(conversation.id, data.content, conversation.knowledge_base_ids)
    question = Message(conversation_id=conversation.id, role="user", content=data.content)
    session.add(question)
    answer = Message(
        conversation_id=conversation.id,
        role="assistant",
        content=turn["answer"],
        citations=[
            {key: passage[key] for key in ("document_id", "title", "page", "section", "chunk_id")}
            for passage in turn["passages"]
        ],
    )
    session.add(answer)
    conversation.updated_at = func.now()
    await session.flush()  # server defaults come back with the INSERT (eager_defaults)
    return Exchange(
        question=MessageRead.model_validate(question), answer=MessageRead.model_validate(answer)
    )
