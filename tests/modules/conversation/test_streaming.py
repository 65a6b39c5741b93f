"""The agent with a language model: a real OpenAI-compatible server on loopback streams its
tokens and tool calls; the answer streams to the client as server-sent events, the run is the
server's (a client that leaves resumes on another process), a model that fails midway leaves
nothing half-stored, and each user's tokens per day are limited in PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.state import app_state
from backend.main import create_app
from backend.modules.conversation.agent import Agent
from tests.modules.conversation.test_conversation import CHECKPOINT_ROWS, CONVERSATIONS, create
from tests.modules.knowledge_base.test_knowledge_base import add_text, make_kb
from tests.modules.knowledge_base.test_tracing import (  # noqa: F401 (a fixture, found by name)
    collector_url,
    received,
)
from tests.modules.user.factories import account, account_at, user_with_token
from tests.support import db
from tests.support.chat_model import ScriptedModel, Step
from tests.support.loopback import serve_asgi
from tests.support.server import uvicorn_process
from tests.support.settings import configured

SSE = {"Accept": "text/event-stream"}


@pytest.fixture
async def model() -> AsyncIterator[tuple[ScriptedModel, str]]:
    scripted = ScriptedModel()
    async with serve_asgi(scripted) as url:
        yield scripted, f"{url}/v1"


@pytest.fixture
def app_settings(
    app_settings: dict[str, object], model: tuple[ScriptedModel, str]
) -> dict[str, object]:
    return {**app_settings, "model_base_url": model[1], "model_name": "loopback-model"}


def parse(body: str) -> list[dict[str, Any]]:
    """Server-sent events as a client reads them: id, event, data (JSON); comments apart."""
    events = []
    for block in body.split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.splitlines():
            name, _, value = line.partition(": ")
            if name == "":
                fields["comment"] = value
            else:
                fields[name] = json.loads(value) if name == "data" else value
        if fields:
            events.append(fields)
    return events


async def stream(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], content: str
) -> list[dict[str, Any]]:
    response = await client.post(url, headers={**headers, **SSE}, json={"content": content})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return parse(response.text)


async def test_a_tool_call_streams_with_its_citations_and_the_answer_is_stored(
    client: httpx.AsyncClient,
    session: AsyncSession,
    model: tuple[ScriptedModel, str],
    app: FastAPI,
) -> None:
    scripted, _ = model
    _, headers = await user_with_token(client, session)
    kb = await make_kb(client, headers)
    manual = "# Valves\n\nClose the relief valve before the pump is started."
    doc = (await add_text(client, headers, kb, "Pump manual", manual)).json()
    conversation = await create(client, headers, knowledge_base_ids=[kb])
    url = f"{CONVERSATIONS}/{conversation['id']}/messages"
    scripted.script = [
        Step(status=429),  # rate limited once: retried
        Step(search="relief valve"),
        Step(text="Close the relief valve first [1]."),
    ]

    events = await stream(client, url, headers, "Which valve before the pump?")
    kinds = [e["event"] for e in events]
    assert kinds[:2] == ["tool_call", "citation"]
    assert kinds[2:] == ["token"] * 6 + ["message", "done"]
    run = events[0]["id"].split(":")[0]
    assert [e["id"] for e in events] == [f"{run}:{n}" for n in range(1, len(events) + 1)]
    assert events[0]["data"] == {
        "name": "search_knowledge_bases",
        "arguments": {"query": "relief valve"},
    }
    assert events[1]["data"]["n"] == 1
    assert events[1]["data"]["document_id"] == doc["id"]
    assert (events[1]["data"]["title"], events[1]["data"]["section"]) == ("Pump manual", "Valves")
    assert "".join(e["data"]["text"] for e in events if e["event"] == "token") == (
        "Close the relief valve first [1]."
    )
    answer = events[-2]["data"]["answer"]
    assert answer["content"] == "Close the relief valve first [1]."
    assert answer["citations"][0]["document_id"] == doc["id"]
    assert answer["prompt_tokens"] > 0
    assert answer["completion_tokens"] == 7
    assert events[-1]["data"] == {"status": "done"}

    # What the model saw: the tool offered, then the passage it asked for, numbered.
    assert len(scripted.requests) == 3
    assert scripted.requests[1]["tools"][0]["function"]["name"] == "search_knowledge_bases"
    tool_result = scripted.requests[2]["messages"][-1]
    assert tool_result["role"] == "tool"
    assert tool_result["content"].startswith("[1] # Valves\n\nClose the relief valve")

    history = (await client.get(url, headers=headers)).json()["items"]
    assert [(m["role"], m["content"]) for m in history] == [
        ("user", "Which valve before the pump?"),
        ("assistant", "Close the relief valve first [1]."),
    ]
    spent = await session.scalar(text("SELECT sum(tokens) FROM token_usage"))
    assert spent == answer["prompt_tokens"] + answer["completion_tokens"]

    # The next turn: the model sees the conversation so far; the JSON form answers 201.
    scripted.script = [Step(text="Yes.")]
    plain = await client.post(url, headers=headers, json={"content": "Sure?"})
    assert plain.status_code == 201, plain.text
    assert plain.json()["answer"]["content"] == "Yes."
    seen = [(m["role"], m["content"]) for m in scripted.requests[-1]["messages"][1:]]
    assert seen == [
        ("user", "Which valve before the pump?"),
        ("assistant", "Close the relief valve first [1]."),
        ("user", "Sure?"),
    ]
    state = await app_state(app).get(Agent).state(conversation["id"])
    assert len(state["history"]) == 4


async def test_a_model_that_keeps_calling_tools_is_cut_off(
    client: httpx.AsyncClient, session: AsyncSession, model: tuple[ScriptedModel, str]
) -> None:
    scripted, _ = model
    scripted.default = Step(search="more")  # every reply asks for another search
    _, headers = await user_with_token(client, session)
    kb = await make_kb(client, headers)
    conversation = await create(client, headers, knowledge_base_ids=[kb])
    url = f"{CONVERSATIONS}/{conversation['id']}/messages"
    answered = await client.post(url, headers=headers, json={"content": "Loop?"})
    assert answered.status_code == 201
    # AGENT_MAX_TOOL_CALLS (3) searches, then one call offered no tool, whose answer stands.
    assert len(scripted.requests) == 4
    assert [("tools" in r) for r in scripted.requests] == [True, True, True, False]


async def test_a_model_failing_midway_is_an_error_event_and_stores_nothing(
    client: httpx.AsyncClient,
    session: AsyncSession,
    model: tuple[ScriptedModel, str],
    app: FastAPI,
) -> None:
    scripted, _ = model
    _, headers = await user_with_token(client, session)
    conversation = await create(client, headers)
    url = f"{CONVERSATIONS}/{conversation['id']}/messages"
    scripted.script = [Step(text="one two three four", drop_after=2)]

    events = await stream(client, url, headers, "Will this last?")
    assert [e["event"] for e in events] == ["token", "token", "error", "done"]
    assert events[2]["data"]["code"] == "model_failed"
    assert "RemoteProtocolError" in events[2]["data"]["detail"]
    assert events[3]["data"] == {"status": "failed"}
    assert (await client.get(url, headers=headers)).json()["items"] == []
    state = await app_state(app).get(Agent).state(conversation["id"])
    assert state.get("history", []) == []

    # Without SSE: the same failure is a 502 that says so; the 4xx it cannot retry too.
    scripted.script = [Step(text="one two three", drop_after=1)]
    failed = await client.post(url, headers=headers, json={"content": "And now?"})
    assert failed.status_code == 502
    assert failed.json()["code"] == "model_failed"
    scripted.script = [Step(status=400)]
    refused = await client.post(url, headers=headers, json={"content": "And now?"})
    assert refused.status_code == 502
    assert "HTTP 400" in refused.json()["detail"]
    assert (await client.get(url, headers=headers)).json()["items"] == []
    assert await session.scalar(text("SELECT count(*) FROM messages")) == 0


@pytest.mark.settings(model_daily_tokens_per_user=50)
async def test_past_the_daily_tokens_a_turn_is_refused_until_midnight_utc(
    client: httpx.AsyncClient, session: AsyncSession, model: tuple[ScriptedModel, str]
) -> None:
    _, headers = await user_with_token(client, session)
    _, other = await user_with_token(client, session)
    mine, theirs = await create(client, headers), await create(client, other)
    mine_url = f"{CONVERSATIONS}/{mine['id']}/messages"
    first = await client.post(mine_url, headers=headers, json={"content": "x" * 400})
    assert first.status_code == 201  # under the limit when it started; over it now
    answer = first.json()["answer"]
    assert answer["prompt_tokens"] + answer["completion_tokens"] > 50

    refused = await client.post(mine_url, headers=headers, json={"content": "more?"})
    assert refused.status_code == 429
    assert refused.json()["code"] == "daily_tokens_spent"
    assert 0 < int(refused.headers["Retry-After"]) <= 86_400
    streamed = await client.post(mine_url, headers={**headers, **SSE}, json={"content": "more?"})
    assert streamed.status_code == 429  # refused before any stream starts
    # Another user's day is their own.
    theirs_url = f"{CONVERSATIONS}/{theirs['id']}/messages"
    assert (await client.post(theirs_url, headers=other, json={"content": "hi"})).status_code == 201
    # Yesterday's tokens do not count today.
    await session.execute(text("UPDATE token_usage SET day = day - 1"))
    assert (await client.post(mine_url, headers=headers, json={"content": "hi"})).status_code == 201


async def test_one_turn_at_a_time_and_a_turn_left_behind_is_interrupted(
    client: httpx.AsyncClient, session: AsyncSession, model: tuple[ScriptedModel, str]
) -> None:
    scripted, _ = model
    _, headers = await user_with_token(client, session)
    conversation = await create(client, headers)
    url = f"{CONVERSATIONS}/{conversation['id']}/messages"
    held = asyncio.Event()
    scripted.script = [Step(text="Slowly.", gate=held)]
    first = asyncio.create_task(client.post(url, headers=headers, json={"content": "One?"}))
    async with asyncio.timeout(30):
        await scripted.asked.wait()  # the first turn has reached the model, which waits
    second = await client.post(url, headers=headers, json={"content": "Two?"})
    assert second.status_code == 409
    assert second.json()["code"] == "turn_in_progress"
    held.set()
    assert (await first).status_code == 201

    # A turn whose process died: its lease is not renewed. Whoever follows it is told, and
    # the conversation takes questions again.
    await session.execute(
        text("UPDATE conversation_runs SET status = 'running', updated_at = now() - interval '1h'")
    )
    await session.execute(
        text("DELETE FROM conversation_run_events WHERE event IN ('message', 'done')")
    )
    events_url = f"{CONVERSATIONS}/{conversation['id']}/events"
    followed = parse((await client.get(events_url, headers=headers)).text)
    assert [e["event"] for e in followed][-2:] == ["error", "done"]
    assert followed[-2]["data"]["code"] == "run_interrupted"
    assert (await client.post(url, headers=headers, json={"content": "Three?"})).status_code == 201
    # Only the latest turn can be followed.
    stale = {"Last-Event-ID": f"{followed[0]['id'].split(':')[0]}:1"}
    gone = await client.get(events_url, headers={**headers, **stale})
    assert gone.status_code == 404
    assert gone.json()["code"] == "run_not_found"


async def test_a_conversation_deleted_mid_turn_keeps_no_agent_state(
    client: httpx.AsyncClient, session: AsyncSession, model: tuple[ScriptedModel, str]
) -> None:
    scripted, _ = model
    _, headers = await user_with_token(client, session)
    conversation = await create(client, headers)
    url = f"{CONVERSATIONS}/{conversation['id']}"
    held = asyncio.Event()
    scripted.script = [Step(text="Too late.", gate=held)]
    asking = asyncio.create_task(
        client.post(f"{url}/messages", headers=headers, json={"content": "Still there?"})
    )
    async with asyncio.timeout(30):
        await scripted.asked.wait()
    assert (await client.delete(url, headers=headers)).status_code == 204
    held.set()  # the model answers once the conversation is gone
    answered = await asking
    assert answered.status_code == 404
    assert answered.json()["code"] == "conversation_not_found"
    assert await session.scalar(CHECKPOINT_ROWS, {"thread": conversation["id"]}) == 0


async def read_events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Events (and heartbeats) of a streaming response as they arrive."""
    block = ""
    async for line in response.aiter_lines():
        if line:
            block += line + "\n"
            continue
        if block:
            yield parse(block)[0]
        block = ""


async def test_a_client_that_leaves_resumes_on_another_process(
    migrated_db: URL, tmp_path: Path
) -> None:
    """The run is the server's: a client reads three tokens from one process and leaves; with
    Last-Event-ID it gets the rest from a second process, through PostgreSQL alone; the answer
    is in the history; quiet streams carry heartbeats; the daily limit holds for both."""
    scripted = ScriptedModel(
        default=Step(text=" ".join(f"w{n}" for n in range(12)), first_delay=1.0, delay=0.15)
    )
    settings = {"SSE_HEARTBEAT_SECONDS": "0.3", "MODEL_DAILY_TOKENS_PER_USER": "20"}
    async with serve_asgi(scripted) as url:
        settings["MODEL_BASE_URL"] = f"{url}/v1"
        async with AsyncExitStack() as processes:
            (one, _), (two, _) = await asyncio.gather(  # two replicas, started together
                *(
                    processes.enter_async_context(
                        uvicorn_process(migrated_db, tmp_path / name, **settings)
                    )
                    for name in "ab"
                )
            )
            await _resume(one, two)


async def _resume(one: str, two: str) -> None:
    """A client reads three tokens from `one` and leaves, then follows the rest at `two`."""
    async with (
        httpx.AsyncClient(base_url=f"{one}/api/v1", timeout=30) as first,
        httpx.AsyncClient(base_url=f"{two}/api/v1", timeout=30) as second,
    ):
        headers = await account_at(one, "leaver")
        created = await first.post("/conversations", headers=headers, json={"title": "t"})
        conversation = created.json()["id"]
        url = f"/conversations/{conversation}/messages"
        seen: list[dict[str, Any]] = []
        async with first.stream(
            "POST", url, headers={**headers, **SSE}, json={"content": "Count?"}
        ) as response:
            assert response.status_code == 200
            async for event in read_events(response):
                seen.append(event)
                if sum(e.get("event") == "token" for e in seen) == 3:
                    break  # the client goes away
        assert any("comment" in e for e in seen[:3]), "no heartbeat before the first token"
        last = [e for e in seen if "id" in e][-1]["id"]

        rest: list[dict[str, Any]] = []
        async with second.stream(
            "GET",
            f"/conversations/{conversation}/events",
            headers={**headers, "Last-Event-ID": last},
        ) as response:
            assert response.status_code == 200
            rest = [e async for e in read_events(response) if "id" in e]
        tokens = [e["data"]["text"] for e in [*seen, *rest] if e.get("event") == "token"]
        assert "".join(tokens) == " ".join(f"w{n}" for n in range(12))
        run, n = last.split(":")
        assert [e["id"] for e in rest] == [
            f"{run}:{k}" for k in range(int(n) + 1, int(n) + 1 + len(rest))
        ]
        assert [e["event"] for e in rest[-2:]] == ["message", "done"]
        history = (await second.get(url, headers=headers)).json()["items"]
        assert [m["content"] for m in history] == ["Count?", "".join(tokens)]

        # The tokens that turn spent count on every replica.
        refused = await second.post(url, headers=headers, json={"content": "Again?"})
        assert refused.status_code == 429
        assert refused.json()["code"] == "daily_tokens_spent"


async def test_model_calls_are_traced_with_model_tokens_and_latency(
    collector_url: str,  # noqa: F811 (the fixture imported above)
    migrated_db: URL,
    tmp_path: Path,
    model: tuple[ScriptedModel, str],
) -> None:
    scripted, model_url = model
    scripted.script = [Step(text="Traced.", first_delay=0.05)]
    app = create_app(
        *configured(
            database_url=db.sync_url(migrated_db),
            file_storage_dir=tmp_path,
            otel_exporter_otlp_endpoint=collector_url,
            model_base_url=model_url,
            model_name="loopback-model",
        )
    )
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t/api/v1") as client,
    ):
        headers = await account(client, "tracer")
        created = await client.post("/conversations", headers=headers, json={"title": "t"})
        url = f"/conversations/{created.json()['id']}/messages"
        asked = await client.post(url, headers=headers, json={"content": "Traced?"})
        assert asked.status_code == 201, asked.text
    # Leaving the lifespan flushes what is still batched.

    chats = [(s, a) for _, s, a in received if s.name == "chat loopback-model"]
    assert len(chats) == 1
    span, attributes = chats[0]
    assert attributes["gen_ai.request.model"] == "loopback-model"
    assert attributes["gen_ai.usage.input_tokens"] == asked.json()["answer"]["prompt_tokens"]
    assert attributes["gen_ai.usage.output_tokens"] == 1
    assert (span.end_time_unix_nano - span.start_time_unix_nano) / 1e9 >= 0.05
    # The HTTP call to the model is inside it.
    calls = [
        s
        for _, s, a in received
        if "/v1/chat/completions" in str(a.get("url.full", a.get("http.url")))
    ]
    assert [c.parent_span_id for c in calls] == [span.span_id]
    # And it is part of the request's trace.
    request = next(s for _, s, _ in received if s.name.startswith("POST /api/v1/conversations/"))
    assert span.trace_id == request.trace_id
