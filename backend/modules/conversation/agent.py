"""The agent: a LangGraph graph whose state LangGraph's own PostgreSQL checkpointer keeps, one
thread per conversation (`thread_id` is the conversation's id).

A turn is two steps: `retrieve` searches the conversation's knowledge bases (the knowledge-base
module's hybrid search) and `answer` writes the reply from what it found, numbering its sources
as citations. No language model is configured in this version: the answer quotes the best
passages and says so. The checkpointer's state also keeps the whole exchange (`history`), so a
turn can read the turns before it.

The checkpointer talks to PostgreSQL through psycopg (LangGraph supports no other driver), in a
pool of its own (CHECKPOINTER_POOL_SIZE connections at most); its tables are created and
upgraded by `alembic upgrade head` (revision 5d444fabc409), never by `setup()` at start.
"""

from __future__ import annotations

import operator
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.postgres.base import MIGRATIONS
from langgraph.graph import END, START, StateGraph
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import URL


class Passage(TypedDict):
    """A chunk the search found, with what a citation needs."""

    text: str
    document_id: str
    title: str
    page: int | None
    section: str | None
    chunk_id: str


class Turn(TypedDict, total=False):
    """The graph's state: this turn's question and findings, and every exchange so far."""

    question: str
    knowledge_base_ids: list[str]
    passages: list[Passage]
    answer: str
    history: Annotated[list[dict[str, str]], operator.add]


# Searches knowledge bases (by id) for a question: the best passages, best first.
Search = Callable[[str, list[uuid.UUID]], Awaitable[list[Passage]]]

# How much of a passage an answer quotes.
QUOTE_CHARS = 400
NO_MODEL = (
    "No language model is configured, so this answer quotes the passages of this "
    "conversation's knowledge bases that best match the question:"
)
NOTHING_FOUND = "Nothing in this conversation's knowledge bases matches the question."
NO_KNOWLEDGE_BASE = (
    "This conversation has no knowledge base to search (name some in `knowledge_base_ids` "
    "when creating one), and no language model is configured to answer on its own."
)


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
        where = ", ".join(
            part
            for part in (
                passage["title"],
                f"page {passage['page']}" if passage["page"] is not None else None,
                passage["section"],
            )
            if part
        )
        quoted.append(f"[{n}] {text} ({where})")
    return "\n\n".join(quoted)


def build_graph(search: Search, checkpointer: AsyncPostgresSaver) -> Any:
    """retrieve -> answer, its state checkpointed per thread."""

    async def retrieve(state: Turn) -> Turn:
        ids = [uuid.UUID(kb) for kb in state["knowledge_base_ids"]]
        return {"passages": await search(state["question"], ids) if ids else []}

    async def answer(state: Turn) -> Turn:
        reply = extractive_answer(state["passages"], bool(state["knowledge_base_ids"]))
        exchange = [
            {"role": "user", "content": state["question"]},
            {"role": "assistant", "content": reply},
        ]
        return {"answer": reply, "history": exchange}

    graph = StateGraph(Turn)
    graph.add_node("retrieve", retrieve)
    graph.add_node("answer", answer)
    graph.add_edge(START, "retrieve")
    graph.add_edge("retrieve", "answer")
    graph.add_edge("answer", END)
    return graph.compile(checkpointer=checkpointer)


class Agent:
    """The compiled graph, its checkpointer and the checkpointer's connection pool."""

    def __init__(self, pool: AsyncConnectionPool[Any], search: Search) -> None:
        self.pool = pool
        self.checkpointer = AsyncPostgresSaver(pool)
        self.graph = build_graph(search, self.checkpointer)

    @classmethod
    async def start(cls, database_url: URL, *, pool_size: int, search: Search) -> Agent:
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
        return cls(pool, search)

    async def ask(self, conversation_id: uuid.UUID, question: str, kbs: list[uuid.UUID]) -> Turn:
        """One turn of the conversation's thread: its answer and the passages it cites."""
        config = {"configurable": {"thread_id": str(conversation_id)}}
        state: Turn = await self.graph.ainvoke(
            {"question": question, "knowledge_base_ids": [str(kb) for kb in kbs]}, config
        )
        return state

    async def state(self, conversation_id: uuid.UUID) -> Turn:
        """The thread's last checkpointed state (empty for a conversation never asked)."""
        config = {"configurable": {"thread_id": str(conversation_id)}}
        snapshot = await self.graph.aget_state(config)
        values: Turn = snapshot.values
        return values

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
