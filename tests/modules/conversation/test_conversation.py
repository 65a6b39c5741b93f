"""Conversations through HTTP: owned like every resource, answered by the real LangGraph agent
with its state in LangGraph's own PostgreSQL checkpointer (tables from `alembic upgrade head`),
citing the knowledge bases it searched; deleting one (or its owner) deletes that state."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.state import app_state
from backend.modules.conversation.agent import APPLICATION_NAME, NO_KNOWLEDGE_BASE, NO_MODEL, Agent
from tests.modules.knowledge_base.test_knowledge_base import add_text, make_kb
from tests.modules.user.factories import PASSWORD, user_with_token
from tests.support import db

CONVERSATIONS = "/api/v1/conversations"
CHECKPOINT_ROWS = text(
    "SELECT (SELECT count(*) FROM checkpoints WHERE thread_id = :thread)"
    " + (SELECT count(*) FROM checkpoint_blobs WHERE thread_id = :thread)"
    " + (SELECT count(*) FROM checkpoint_writes WHERE thread_id = :thread)"
)


async def create(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = await client.post(CONVERSATIONS, headers=headers, json={"title": "t", **body})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def ask(
    client: httpx.AsyncClient, headers: dict[str, str], conversation: str, content: str
) -> dict[str, Any]:
    response = await client.post(
        f"{CONVERSATIONS}/{conversation}/messages", headers=headers, json={"content": content}
    )
    assert response.status_code == 201, response.text
    exchange: dict[str, Any] = response.json()
    return exchange


async def test_conversations_are_their_owners_alone(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    _, mine = await user_with_token(client, session)
    _, theirs = await user_with_token(client, session)
    their_kb = await make_kb(client, theirs)
    first = await create(client, mine, title="First")
    second = await create(client, mine, title="Second")
    # The test is one transaction (one now()): the first was last active a minute before.
    await session.execute(
        text("UPDATE conversations SET updated_at = now() - interval '1 minute' WHERE id = :id"),
        {"id": first["id"]},
    )

    listed = (await client.get(f"{CONVERSATIONS}?limit=1", headers=mine)).json()
    assert [c["title"] for c in listed["items"]] == ["Second"]
    assert listed["has_more"] is True
    renamed = await client.patch(
        f"{CONVERSATIONS}/{first['id']}", headers=mine, json={"title": "Renamed"}
    )
    assert renamed.json()["title"] == "Renamed"

    url = f"{CONVERSATIONS}/{second['id']}"
    for method in ("GET", "PATCH", "DELETE"):
        response = await client.request(method, url, headers=theirs, json={"title": "x"})
        assert response.status_code == 404, method
        assert response.json()["code"] == "conversation_not_found"
    asked = await client.post(f"{url}/messages", headers=theirs, json={"content": "hi"})
    assert asked.status_code == 404
    assert (await client.get(f"{url}/messages", headers=theirs)).status_code == 404
    assert (await client.get(f"{CONVERSATIONS}", headers=theirs)).json()["items"] == []
    # Grounded only in the caller's own knowledge bases.
    refused = await client.post(
        CONVERSATIONS, headers=mine, json={"title": "t", "knowledge_base_ids": [their_kb]}
    )
    assert refused.status_code == 422
    assert refused.json()["code"] == "unknown_knowledge_base"


async def test_the_agent_answers_from_the_knowledge_base_with_citations(
    client: httpx.AsyncClient, session: AsyncSession, app: FastAPI
) -> None:
    _, headers = await user_with_token(client, session)
    kb = await make_kb(client, headers)
    manual = "# Valves\n\nClose the relief valve before the pump is started."
    pasta = "# Dinner\n\nBoil the spaghetti for nine minutes."
    doc = (await add_text(client, headers, kb, "Pump manual", manual)).json()
    await add_text(client, headers, kb, "Recipes", pasta)
    conversation = await create(client, headers, knowledge_base_ids=[kb])

    exchange = await ask(client, headers, conversation["id"], "Which valve before the pump?")
    answer = exchange["answer"]
    assert answer["role"] == "assistant"
    assert answer["content"].startswith(NO_MODEL)
    first, second = answer["content"].split("[1] ")[1].split("[2] ")
    assert "Close the relief valve before the pump is started. (Pump manual, Valves)" in first
    assert "spaghetti" in second  # found too, ranked after
    assert answer["citations"][0] == {
        "document_id": doc["id"],
        "title": "Pump manual",
        "page": None,
        "section": "Valves",
        "chunk_id": answer["citations"][0]["chunk_id"],
    }
    await ask(client, headers, conversation["id"], "And the spaghetti?")

    history = (
        await client.get(f"{CONVERSATIONS}/{conversation['id']}/messages", headers=headers)
    ).json()["items"]
    assert [(m["role"], m["content"][:20]) for m in history] == [
        ("user", "Which valve before t"),
        ("assistant", NO_MODEL[:20]),
        ("user", "And the spaghetti?"),
        ("assistant", NO_MODEL[:20]),
    ]
    assert "Boil the spaghetti" in history[3]["content"]
    # The agent's own state, kept by LangGraph's checkpointer, holds both turns.
    state = await app_state(app).get(Agent).state(conversation["id"])
    assert [turn["content"] for turn in state["history"][::2]] == [
        "Which valve before the pump?",
        "And the spaghetti?",
    ]

    alone = await create(client, headers)
    assert (await ask(client, headers, alone["id"], "Anything?"))["answer"]["content"] == (
        NO_KNOWLEDGE_BASE
    )


async def test_deleting_a_conversation_or_its_owner_deletes_its_agent_state(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    _, headers = await user_with_token(client, session)
    kept, deleted = await create(client, headers), await create(client, headers)
    for conversation in (kept, deleted):
        await ask(client, headers, conversation["id"], "Hello?")
    rows = {
        c["id"]: await session.scalar(CHECKPOINT_ROWS, {"thread": c["id"]}) for c in (kept, deleted)
    }
    assert all(count > 0 for count in rows.values())

    gone = await client.delete(f"{CONVERSATIONS}/{deleted['id']}", headers=headers)
    assert gone.status_code == 204
    assert await session.scalar(CHECKPOINT_ROWS, {"thread": deleted["id"]}) == 0
    assert await session.scalar(CHECKPOINT_ROWS, {"thread": kept["id"]}) == rows[kept["id"]]

    account = await client.request(
        "DELETE", "/api/v1/users/me", headers=headers, json={"password": PASSWORD}
    )
    assert account.status_code == 204, account.text
    assert await session.scalar(CHECKPOINT_ROWS, {"thread": kept["id"]}) == 0


def gauge(metrics: str, state: str) -> float:
    line = f'checkpointer_pool_connections{{state="{state}"}} '
    return float(next(row for row in metrics.splitlines() if row.startswith(line)).split()[-1])


async def test_a_checkpointer_connection_killed_costs_no_turn_and_the_pool_is_measured(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    """The checkpointer's psycopg pool beside the app's: bounded, in /metrics, and a connection
    the server drops (pg_terminate_backend) is replaced when next taken."""
    _, headers = await user_with_token(client, session)
    conversation = await create(client, headers)
    await ask(client, headers, conversation["id"], "First?")
    metrics = (await client.get("/metrics")).text
    assert gauge(metrics, "max") == 2
    assert gauge(metrics, "idle") >= 1
    assert gauge(metrics, "in_use") == 0

    killed = await session.scalar(
        text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = :name AND datname = current_database()"
        ),
        {"name": APPLICATION_NAME},
    )
    assert killed >= 1
    second = await ask(client, headers, conversation["id"], "Second?")
    assert second["answer"]["content"] == NO_KNOWLEDGE_BASE


async def test_a_turn_that_fails_stores_neither_question_nor_answer(
    client: httpx.AsyncClient, session: AsyncSession, app: FastAPI, app_db: URL
) -> None:
    """The agent's state cannot be written (its table renamed away, committed): the request
    fails, and the history has no half of the exchange."""
    _, headers = await user_with_token(client, session)
    conversation = await create(client, headers)
    url = f"{CONVERSATIONS}/{conversation['id']}/messages"
    await db.execute(app_db, "ALTER TABLE checkpoints RENAME TO checkpoints_away")
    try:
        failed = await client.post(url, headers=headers, json={"content": "Lost?"})
    finally:
        await db.execute(app_db, "ALTER TABLE checkpoints_away RENAME TO checkpoints")
    assert failed.status_code == 500
    assert failed.json()["code"] == "agent_failed"
    assert (await client.get(url, headers=headers)).json()["items"] == []
    assert (await ask(client, headers, conversation["id"], "Back?"))["answer"]["content"]
