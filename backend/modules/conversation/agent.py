"""The agent: a LangGraph graph whose state LangGraph's own PostgreSQL checkpointer keeps, one
thread per conversation (`thread_id` is the conversation's id).

With a language model (any OpenAI-compatible chat endpoint, model.py), a turn is the model
answering with a tool, `search_knowledge_bases`, which runs the knowledge-base module's hybrid
search over the conversation's knowledge bases; the passages found are numbered as citations
for the model to cite as [n]; the model sees the conversation's earlier exchanges. Without one,
a turn is that search for the question, then an extractive answer quoting the best passages
and saying that no model is configured. Either way the nodes report as they go (tokens, tool
calls, citations, the model's token usage) through LangGraph's custom stream, which runs.py
turns into the turn's events.

The checkpointer talks to PostgreSQL through psycopg (LangGraph supports no other driver), in a
pool of its own (CHECKPOINTER_POOL_SIZE connections at most); its tables are created and
upgraded by `alembic upgrade head` (revision 5d444fabc409), never by `setup()` at start.
"""

from __future__ import annotations

import json
import operator
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.postgres.base import MIGRATIONS
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import URL

from backend.modules.conversation.model import ChatModel


class Passage(TypedDict):
    """A chunk the search found, with what a citation needs."""

    text: str
    document_id: str
    title: str
    page: int | None
    section: str | None
    chunk_id: str


class Turn(TypedDict, total=False):
    """The graph's state: this turn's question, findings and model exchange (`scratch`), and
    every exchange so far (`history`)."""

    question: str
    knowledge_base_ids: list[str]
    passages: list[Passage]
    scratch: list[dict[str, Any]]
    searches: int
    answer: str | None
    history: Annotated[list[dict[str, str]], operator.add]


# Searches knowledge bases (by id) for a question: the best passages, best first.
Search = Callable[[str, list[uuid.UUID]], Awaitable[list[Passage]]]
# What a turn reports as it goes: (event, data): token, tool_call, citation and usage.
Emit = Callable[[str, dict[str, Any]], None]

# How much of a passage an extractive answer quotes, and a model reads.
QUOTE_CHARS = 400
PASSAGE_CHARS = 2000
# The longest query the model may search for.
QUERY_CHARS = 1000
NO_MODEL = (
    "No language model is configured, so this answer quotes the passages of this "
    "conversation's knowledge bases that best match the question:"
)
NOTHING_FOUND = "Nothing in this conversation's knowledge bases matches the question."
NO_KNOWLEDGE_BASE = (
    "This conversation has no knowledge base to search (name some in `knowledge_base_ids` "
    "when creating one), and no language model is configured to answer on its own."
)
SEARCH_TOOL = "search_knowledge_bases"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": SEARCH_TOOL,
            "description": (
                "Search the documents of this conversation's knowledge bases. Returns numbered "
                "passages; cite them in the answer as [n]."
            ),
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string", "description": "what to look for"}},
                "required": ["query"],
            },
        },
    }
]
SYSTEM = (
    "You are the assistant of this service. Answer from the user's documents: search them with "
    f"the {SEARCH_TOOL} tool, cite the passages you use as [n], and say so when they do not "
    "hold the answer."
)
SYSTEM_NO_DOCUMENTS = "You are the assistant of this service. This conversation has no documents."


def where(passage: Passage) -> str:
    """A passage's place: title, page, section."""
    page = f"page {passage['page']}" if passage["page"] is not None else None
    return ", ".join(part for part in (passage["title"], page, passage["section"]) if part)


def extractive_answer(passages: list[Passage], searched: bool) -> str:
    """The reply without a language model: the passages, quoted and numbered as citations."""
    if not searched:
        return NO_KNOWLEDGE_BASE
    if not passages:
        return NOTHING_FOUND
    quoted = [NO_MODEL]
    for n, passage in enumerate(passages, 1):
        text = " ".join(passage["text"].split())
        if len(text) > QUOTE_CHARS:
            text = text[:QUOTE_CHARS].rsplit(" ", 1)[0] + " ..."
        quoted.append(f"[{n}] {text} ({where(passage)})")
    return "\n\n".join(quoted)


def cited(passage: Passage) -> dict[str, Any]:
    """Where a passage came from: a stored answer's citation."""
    return {
        "document_id": passage["document_id"],
        "title": passage["title"],
        "page": passage["page"],
        "section": passage["section"],
        "chunk_id": passage["chunk_id"],
    }


def citation(n: int, passage: Passage) -> dict[str, Any]:
    """The `citation` event's data: `[n]` in the answer, and where it came from."""
    return {"n": n, **cited(passage)}


def _emit(event: str, data: dict[str, Any]) -> None:
    get_stream_writer()({"event": event, "data": data})


async def _search(
    search: Search, state: Turn, query: str, found: list[Passage]
) -> tuple[list[Passage], list[int]]:
    """Search, number what is new after `found` (emitting its citations), and return the new
    list and the numbers of this search's passages."""
    ids = [uuid.UUID(kb) for kb in state["knowledge_base_ids"]]
    _emit("tool_call", {"name": SEARCH_TOOL, "arguments": {"query": query}})
    passages = await search(query, ids)
    cited = {p["chunk_id"]: n for n, p in enumerate(found, 1)}
    found = list(found)
    numbers = []
    for passage in passages:
        if passage["chunk_id"] not in cited:
            found.append(passage)
            cited[passage["chunk_id"]] = len(found)
            _emit("citation", citation(len(found), passage))
        numbers.append(cited[passage["chunk_id"]])
    return found, numbers


def build_graph(
    search: Search,
    checkpointer: AsyncPostgresSaver,
    model: ChatModel | None = None,
    *,
    max_searches: int = 3,
    history_messages: int = 20,
) -> Any:
    """With a model: `model` (streams its answer, may ask for searches) <-> `tools` (runs
    them), then `finish`. Without: `retrieve` (one search for the question) -> `answer`
    (extractive). The state is checkpointed per thread."""

    async def retrieve(state: Turn) -> Turn:
        if not state["knowledge_base_ids"]:
            return {"passages": []}
        found, _ = await _search(search, state, state["question"], [])
        return {"passages": found}

    async def answer(state: Turn) -> Turn:
        reply = extractive_answer(state["passages"], bool(state["knowledge_base_ids"]))
        _emit("token", {"text": reply})
        return {"answer": reply}

    async def call_model(state: Turn) -> Turn:
        assert model is not None
        can_search = bool(state["knowledge_base_ids"]) and state["searches"] < max_searches
        system = SYSTEM if state["knowledge_base_ids"] else SYSTEM_NO_DOCUMENTS
        earlier = state.get("history", [])[-history_messages:] if history_messages else []
        messages = [
            {"role": "system", "content": system},
            *earlier,
            {"role": "user", "content": state["question"]},
            *state["scratch"],
        ]
        reply = await model.stream(
            messages, TOOLS if can_search else [], lambda text: _emit("token", {"text": text})
        )
        _emit("usage", {"prompt": reply.prompt_tokens, "completion": reply.completion_tokens})
        if reply.tool_calls and can_search:
            asked = {
                "role": "assistant",
                "content": reply.content or None,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments},
                    }
                    for call in reply.tool_calls
                ],
            }
            return {"scratch": [*state["scratch"], asked]}
        return {"answer": reply.content}

    async def tools(state: Turn) -> Turn:
        calls = state["scratch"][-1]["tool_calls"]
        found, results = state["passages"], []
        searches = state["searches"]
        for call in calls:
            # Every call counts, a malformed one too: a model that keeps calling is answered
            # "no more" after max_searches, and then offered no tool at all.
            searches += 1
            query = _query(call["function"], state["question"])
            if searches > max_searches:
                content = "No more searches in this turn: answer with what you have."
            elif call["function"]["name"] != SEARCH_TOOL or query is None:
                content = f"Unknown tool or arguments; the only tool is {SEARCH_TOOL}(query)."
            else:
                found, numbers = await _search(search, state, query, found)
                content = (
                    "\n\n".join(
                        f"[{n}] {found[n - 1]['text'][:PASSAGE_CHARS]} ({where(found[n - 1])})"
                        for n in numbers
                    )
                    or "Nothing found."
                )
            results.append({"role": "tool", "tool_call_id": call["id"], "content": content})
        return {"passages": found, "scratch": [*state["scratch"], *results], "searches": searches}

    def after_model(state: Turn) -> str:
        return "tools" if state.get("answer") is None else "finish"

    async def finish(state: Turn) -> Turn:
        exchange = [
            {"role": "user", "content": state["question"]},
            {"role": "assistant", "content": state["answer"] or ""},
        ]
        return {"history": exchange}

    graph = StateGraph(Turn)
    graph.add_node("finish", finish)
    if model is None:
        graph.add_node("retrieve", retrieve)
        graph.add_node("answer", answer)
        graph.add_edge(START, "retrieve")
        graph.add_edge("retrieve", "answer")
        graph.add_edge("answer", "finish")
    else:
        graph.add_node("model", call_model)
        graph.add_node("tools", tools)
        graph.add_edge(START, "model")
        graph.add_conditional_edges("model", after_model, ["tools", "finish"])
        graph.add_edge("tools", "model")
    graph.add_edge("finish", END)
    return graph.compile(checkpointer=checkpointer)


def _query(function: dict[str, Any], question: str) -> str | None:
    """The search query of a tool call's arguments (the question if it names none); None when
    the arguments are not a JSON object."""
    try:
        arguments = json.loads(function.get("arguments") or "{}")
    except ValueError:
        return None
    if not isinstance(arguments, dict):
        return None
    query = arguments.get("query")
    query = query if isinstance(query, str) and query.strip() else question
    return query[:QUERY_CHARS]


class Agent:
    """The compiled graph, its checkpointer and the checkpointer's connection pool."""

    def __init__(
        self, pool: AsyncConnectionPool[Any], graph: Callable[[AsyncPostgresSaver], Any]
    ) -> None:
        self.pool = pool
        self.checkpointer = AsyncPostgresSaver(pool)
        self.graph = graph(self.checkpointer)

    @classmethod
    async def start(
        cls, database_url: URL, *, pool_size: int, graph: Callable[[AsyncPostgresSaver], Any]
    ) -> Agent:
        """The pool connects when first used: a database that is away at start does not stop
        the app (`/readyz` says what is wrong). A connection that broke is noticed when it is
        taken (`check`) and replaced."""
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            libpq_url(database_url),
            min_size=0,
            max_size=pool_size,
            open=False,
            # As LangGraph's checkpointer needs them: autocommit, rows as dicts, and no
            # server-side prepared statements (they break behind PgBouncer).
            kwargs={
                "autocommit": True,
                "prepare_threshold": None,
                "row_factory": dict_row,
                "application_name": APPLICATION_NAME,
            },
            check=AsyncConnectionPool.check_connection,
            name="checkpointer",
        )
        await pool.open(wait=False)
        POOLS.pools.add(pool)
        return cls(pool, graph)

    async def run(
        self, conversation_id: uuid.UUID, question: str, kbs: list[uuid.UUID], emit: Emit
    ) -> Turn:
        """One turn of the conversation's thread, reporting as it goes; its final state."""
        config = {"configurable": {"thread_id": str(conversation_id)}}
        turn: Turn = {
            "question": question,
            "knowledge_base_ids": [str(kb) for kb in kbs],
            "passages": [],
            "scratch": [],
            "searches": 0,
            "answer": None,  # set by the node that answers
        }
        final: Turn = {}
        # The checkpoint is written once, when the turn ends (however it ends): one write per
        # turn, none of them on the way to the first token.
        async for mode, chunk in self.graph.astream(
            turn, config, stream_mode=["custom", "values"], durability="exit"
        ):
            if mode == "custom":
                emit(chunk["event"], chunk["data"])
            else:
                final = chunk
        return final

    async def state(self, conversation_id: uuid.UUID) -> Turn:
        """The thread's last checkpointed state (empty for a conversation never asked)."""
        config = {"configurable": {"thread_id": str(conversation_id)}}
        snapshot = await self.graph.aget_state(config)
        values: Turn = snapshot.values
        return values

    async def forget(self, conversation_id: uuid.UUID) -> None:
        """Delete the thread's checkpoints (a conversation deleted while a turn ran: the
        deletion's trigger came before the turn's checkpoint)."""
        await self.checkpointer.adelete_thread(str(conversation_id))

    async def check_schema(self) -> None:
        """Raise unless the checkpointer's tables are at the version this LangGraph expects."""
        async with self.pool.connection() as connection:
            found = await connection.execute(
                "SELECT coalesce(max(v), -1) AS v FROM checkpoint_migrations"
            )
            row = await found.fetchone()
        assert row is not None  # an aggregate: always one row
        have, want = row["v"], len(MIGRATIONS) - 1
        if have < want:
            raise RuntimeError(
                f"LangGraph's checkpointer schema is at version {have}, the installed library "
                f"expects {want}: run `alembic upgrade head` (a LangGraph upgrade with new "
                "checkpointer migrations needs a revision: docs/migrations.md)"
            )

    async def close(self) -> None:
        await self.pool.close()


# How the checkpointer's connections show in pg_stat_activity.
APPLICATION_NAME = "langgraph-checkpointer"


class _PoolMetrics(Collector):
    """`checkpointer_pool_connections{state}` in `/metrics`, read from the live pools when
    scraped: in_use, idle, waiting (requests queued for a connection) and max."""

    def __init__(self) -> None:
        self.pools: weakref.WeakSet[AsyncConnectionPool[Any]] = weakref.WeakSet()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "checkpointer_pool_connections",
            "LangGraph checkpointer's psycopg pool connections by state.",
            labels=["state"],
        )
        stats = [pool.get_stats() for pool in list(self.pools) if not pool.closed]
        size = sum(s.get("pool_size", 0) for s in stats)
        idle = sum(s.get("pool_available", 0) for s in stats)
        family.add_metric(["in_use"], size - idle)
        family.add_metric(["idle"], idle)
        family.add_metric(["waiting"], sum(s.get("requests_waiting", 0) for s in stats))
        family.add_metric(["max"], sum(s.get("pool_max", 0) for s in stats))
        yield family


POOLS = _PoolMetrics()
REGISTRY.register(POOLS)


def libpq_url(url: URL) -> str:
    """The database URL as libpq (psycopg) takes it."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)
