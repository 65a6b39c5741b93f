from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response, status
from fastapi.responses import StreamingResponse

from backend.core.errors import AppError, error_responses
from backend.core.pagination import PageDep
from backend.db.session import ReadSessionDep, SessionDep
from backend.modules.conversation import service
from backend.modules.conversation.dependencies import (
    OwnedConversation,
    OwnedConversationForUpdate,
    RunsDep,
    lifespan,
)
from backend.modules.conversation.exceptions import (
    AgentFailed,
    ConversationNotFound,
    DailyTokensSpent,
    ModelFailed,
    RunInterrupted,
    RunNotFound,
    TurnInProgress,
    UnknownKnowledgeBase,
)
from backend.modules.conversation.runs import Event, sse
from backend.modules.conversation.schemas import (
    ConversationCreate,
    ConversationPage,
    ConversationRead,
    ConversationUpdate,
    Exchange,
    MessageCreate,
    MessagePage,
)
from backend.modules.conversation.settings import ConversationSettingsDep
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


EVENT_STREAM = "text/event-stream"
# No caching, and no buffering by nginx-style proxies: each event leaves as it is written.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
EVENTS = ["tool_call", "citation", "token", "message", "error", "done"]
STREAMED: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "With `Accept: text/event-stream`: the turn as server-sent events, each "
        "with an id `<run>:<n>` and JSON data: `tool_call` {name, arguments}, `citation` {n, "
        "document_id, title, page, section, chunk_id}, `token` {text}, `message` (the stored "
        "exchange, as the JSON answer), `error` {code, detail}, `done` {status}; a `: heartbeat` "
        "comment on a quiet stream. An error once it has started is an `error` event, then "
        "`done`.",
        "content": {
            EVENT_STREAM: {
                "schema": {  # one event (OpenAPI 3.2's itemSchema; 3.1 tools read it so)
                    "type": "object",
                    "required": ["event", "id", "data"],
                    "properties": {
                        "event": {"type": "string", "enum": EVENTS},
                        "id": {"type": "string"},
                        "data": {"type": "string", "contentMediaType": "application/json"},
                    },
                }
            }
        },
    }
}


def event_stream(run_id: uuid.UUID, events: AsyncIterator[Event | None]) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        async for event in events:
            yield sse(run_id, event)

    return StreamingResponse(body(), media_type=EVENT_STREAM, headers=SSE_HEADERS)


@router.post(
    "/{conversation_id}/messages",
    response_model=Exchange,
    status_code=status.HTTP_201_CREATED,
    responses={
        **STREAMED,
        **error_responses(
            ConversationNotFound,
            TurnInProgress,
            DailyTokensSpent,
            ModelFailed,
            AgentFailed,
            RunInterrupted,
        ),
    },
)
async def ask(
    request: Request,
    user: CurrentUser,
    conversation: OwnedConversation,
    runs: RunsDep,
    settings: ConversationSettingsDep,
    data: MessageCreate,
) -> Any:
    """Ask the agent: it searches the conversation's knowledge bases and answers, citing its
    sources (`[n]` in the answer is `citations[n-1]`). With `Accept: text/event-stream` the
    answer streams as it is written; otherwise the reply is the stored exchange (201). The
    turn belongs to the server: a client that goes away can follow the rest at `GET
    .../events` (with `Last-Event-ID`, on any replica), and the answer lands in the history
    either way, with the question, once the agent has answered (if it fails, neither is
    stored)."""
    run = await runs.start(conversation=conversation, owner_id=user.id, question=data.content)
    if EVENT_STREAM in request.headers.get("accept", ""):
        return event_stream(run.id, run.follow(settings.sse_heartbeat_seconds))
    await run.finished.wait()
    if isinstance(run.outcome, AppError):
        raise run.outcome
    return run.outcome


@router.get(
    "/{conversation_id}/events",
    status_code=status.HTTP_200_OK,
    response_class=StreamingResponse,
    responses={**STREAMED, **error_responses(ConversationNotFound, RunNotFound)},
)
async def follow_events(
    conversation: OwnedConversation,
    runs: RunsDep,
    settings: ConversationSettingsDep,
    last_event_id: Annotated[
        str,
        Header(
            pattern=r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
            r":[0-9]{1,9})?$",
            description="The id of the last event received (`<run id>:<n>`)",
        ),
    ] = "",
) -> StreamingResponse:
    """The conversation's latest turn as server-sent events, from its first event, or after
    `Last-Event-ID` (`<run>:<n>`, as a browser's EventSource sends it when it reconnects):
    for a client whose stream broke, on any replica. It ends with the turn's `done`."""
    run_id, after = await runs.find(conversation.id, last_event_id)
    return event_stream(run_id, runs.replay(run_id, after, settings.sse_heartbeat_seconds))
