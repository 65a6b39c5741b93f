"""A turn is a run the server owns: it goes on when the client that asked goes away, and its
events are kept in PostgreSQL so a client that reconnects, to this replica or another, with
`Last-Event-ID`, gets the rest (no other broker).

The client that asked reads the run's events from memory as they come (a token costs no
database round trip on its way out); a writer task per process stores them in batches (one
INSERT for every run's new events, every FLUSH_SECONDS) and renews the leases of the runs it
hosts. A client following from elsewhere reads them back (`replay`). The end of a turn is one
transaction: the question and the answer in the history, the tokens spent, the run done, and
its last events (`message`, `done`); a turn that fails stores its error instead and nothing of
the exchange. A run whose process died (its lease not renewed for LEASE_EXPIRY seconds) ends
for its followers with an `error`, and is failed by the conversation's next question.

Events (SSE `event:` names, `data:` JSON, `id:` `<run id>:<n>`): `tool_call` {name,
arguments}, `citation` {n, document_id, title, page, section, chunk_id}, `token` {text},
`message` (the stored exchange, as the non-streaming answer), `error` {code, detail}, `done`
{status}. A quiet stream carries a comment (`: heartbeat`) every SSE_HEARTBEAT_SECONDS.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.errors import AppError
from backend.db.session import Database
from backend.modules.conversation.agent import Agent, cited
from backend.modules.conversation.exceptions import (
    AgentFailed,
    ConversationNotFound,
    DailyTokensSpent,
    ModelFailed,
    RunInterrupted,
    RunNotFound,
    TurnInProgress,
)
from backend.modules.conversation.models import Conversation, Message, Run, RunEvent
from backend.modules.conversation.schemas import Exchange, MessageRead

logger = logging.getLogger(__name__)

# How long new events wait to be stored together, and how often a follower elsewhere looks.
FLUSH_SECONDS = 0.05
POLL_SECONDS = 0.2
# A live run's lease is renewed this often; one not renewed for LEASE_EXPIRY is dead.
LEASE_SECONDS = 5.0
LEASE_EXPIRY = 30.0
# On shutdown, runs get this long to finish before they are failed.
SHUTDOWN_SECONDS = 20.0

# An `error` event's data: the error a non-streaming turn would answer with.
ERRORS: dict[str, type[AppError]] = {
    e.code: e for e in (ModelFailed, AgentFailed, RunInterrupted, ConversationNotFound)
}
INTERRUPTED = {"code": RunInterrupted.code, "detail": RunInterrupted.detail}
AGENT_FAILED = {"code": AgentFailed.code, "detail": AgentFailed.detail}
DELETED = {
    "code": ConversationNotFound.code,
    "detail": "The conversation was deleted while the agent answered; nothing was stored",
}

# Today in UTC, by the database's clock (every replica's), and the seconds until tomorrow.
TODAY = "(now() AT TIME ZONE 'utc')::date"
# A turn's run, in one statement: the conversation's finished runs (and their events) go, only
# its latest turn being followable; none is opened (no row back) past the owner's daily tokens
# (:limit, 0: none); one already running violates uq_conversation_runs_running.
OPEN = text(
    "WITH gone AS (DELETE FROM conversation_runs "
    "WHERE conversation_id = :conversation AND status <> 'running') "
    "INSERT INTO conversation_runs (id, conversation_id) SELECT :id, :conversation "
    "WHERE :limit = 0 OR coalesce((SELECT tokens FROM token_usage "
    f"WHERE user_id = :user AND day = {TODAY}), 0) < :limit RETURNING id"
)
UNTIL_TOMORROW = text(
    "SELECT ceil(extract(epoch FROM (date_trunc('day', now() AT TIME ZONE 'utc')"
    " + interval '1 day') - now() AT TIME ZONE 'utc'))::int"
)
SPEND = text(
    f"INSERT INTO token_usage (user_id, day, tokens) VALUES (:user, {TODAY}, :tokens) "
    "ON CONFLICT (user_id, day) DO UPDATE SET tokens = token_usage.tokens + excluded.tokens"
)
# Every run's new events in one statement (arrays in, rows out).
STORE_EVENTS = text(
    "INSERT INTO conversation_run_events (run_id, seq, event, data) "
    "SELECT * FROM unnest(CAST(:run_ids AS uuid[]), CAST(:seqs AS int[]), "
    "CAST(:events AS text[]), CAST(:datas AS jsonb[]))"
)
RENEW = (
    update(Run)
    .where(Run.id.in_(bindparam("ids", expanding=True)), Run.status == "running")
    .values(updated_at=func.now())
)
# A run's status, and whether it is running on a lapsed lease (its process died).
RUN_STATE = text(
    "SELECT status, status = 'running' AND updated_at < now() - make_interval(secs => :expiry) "
    "AS stale FROM conversation_runs WHERE id = :run"
)
EXPIRE = text(
    "UPDATE conversation_runs SET status = 'failed', updated_at = now() "
    "WHERE status = 'running' AND updated_at < now() - make_interval(secs => :expiry) "
    "AND conversation_id = :conversation"
)


@dataclass
class Event:
    seq: int
    event: str
    data: dict[str, Any]


def sse(run_id: uuid.UUID, event: Event | None) -> str:
    """One event as server-sent events put it (None: a heartbeat comment)."""
    if event is None:
        return ": heartbeat\n\n"
    data = json.dumps(event.data, separators=(",", ":"), default=str)
    return f"id: {run_id}:{event.seq}\nevent: {event.event}\ndata: {data}\n\n"


class LiveRun:
    """A run in this process: its events so far, for the client that asked."""

    def __init__(self, run_id: uuid.UUID) -> None:
        self.id = run_id
        self.events: list[Event] = []
        self.finished = asyncio.Event()
        self.outcome: Exchange | AppError | None = None
        self._changed = asyncio.Event()

    def next(self, event: str, data: dict[str, Any]) -> Event:
        """The run's next event, numbered; `publish` shows it to followers."""
        return Event(len(self.events) + 1, event, data)

    def publish(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()
        self._changed = asyncio.Event()

    async def follow(self, heartbeat: float) -> AsyncIterator[Event | None]:
        """Every event from the first, as they come; None after `heartbeat` quiet seconds."""
        sent = 0
        while True:
            changed = self._changed
            while sent < len(self.events):
                sent += 1
                yield self.events[sent - 1]
                if self.events[sent - 1].event == "done":
                    return
            try:
                async with asyncio.timeout(heartbeat):
                    await changed.wait()
            except TimeoutError:
                yield None


class Runs:
    """This process's runs, their event writer and their leases."""

    def __init__(
        self,
        database: Callable[[], Database],
        agent: Agent,
        *,
        daily_tokens: int,
    ) -> None:
        self.database = database
        self.agent = agent
        self.daily_tokens = daily_tokens
        self.live: dict[uuid.UUID, LiveRun] = {}
        self.flush_seconds = FLUSH_SECONDS
        self._tasks: set[asyncio.Task[None]] = set()
        self._unsaved: dict[uuid.UUID, list[Event]] = {}
        self._wake = asyncio.Event()
        self._writer = asyncio.create_task(self._write(), name="conversation-run-events")

    async def start(
        self, *, conversation: Conversation, owner_id: uuid.UUID, question: str
    ) -> LiveRun:
        """Open a run for the question (409 while the conversation has one running, 429 past
        the owner's tokens for today) and start answering it in the background."""
        run_id = uuid.uuid4()
        values = {
            "id": run_id,
            "conversation": conversation.id,
            "user": owner_id,
            "limit": self.daily_tokens,
        }
        try:
            async with self.database().sessionmaker() as session, session.begin():
                opened = await session.scalar(OPEN, values)
                until_tomorrow = await session.scalar(UNTIL_TOMORROW) if opened is None else 0
        except IntegrityError:
            until_tomorrow = await self._reopen(values)
        if until_tomorrow:
            raise DailyTokensSpent(retry_after=max(1, until_tomorrow))
        run = LiveRun(run_id)
        self.live[run.id] = run
        task = asyncio.create_task(
            self._run(run, conversation, owner_id, question), name=f"conversation-run-{run.id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return run

    async def _reopen(self, values: dict[str, Any]) -> int:
        """The conversation has a turn running: 409, unless its process died (its lease
        expired), in which case that turn is failed and this one opens."""
        try:
            async with self.database().sessionmaker() as session, session.begin():
                expired = await session.execute(EXPIRE, {"expiry": LEASE_EXPIRY, **values})
                if not expired.rowcount:  # type: ignore[attr-defined]
                    raise TurnInProgress()
                opened = await session.scalar(OPEN, values)
                return await session.scalar(UNTIL_TOMORROW) if opened is None else 0
        except IntegrityError:  # another request opened one meanwhile
            raise TurnInProgress() from None

    async def _run(
        self, run: LiveRun, conversation: Conversation, owner_id: uuid.UUID, question: str
    ) -> None:
        spent = {"prompt": 0, "completion": 0}

        def emit(event: str, data: dict[str, Any]) -> None:
            if event == "usage":
                spent["prompt"] += data["prompt"]
                spent["completion"] += data["completion"]
                return
            shown = run.next(event, data)
            run.publish(shown)
            self._unsaved.setdefault(run.id, []).append(shown)
            self._wake.set()

        error: dict[str, str] | None = None
        turn: dict[str, Any] = {}
        try:
            turn = dict(
                await self.agent.run(
                    conversation.id, question, conversation.knowledge_base_ids, emit
                )
            )
        except ModelFailed as exc:
            error = {"code": exc.code, "detail": exc.detail}
        except asyncio.CancelledError:
            error = INTERRUPTED
        except Exception:
            logger.exception("The agent failed a turn of conversation %s", conversation.id)
            error = AGENT_FAILED
        try:
            await self._finish(run, conversation, owner_id, question, turn, spent, error)
        finally:
            self.live.pop(run.id, None)
            run.finished.set()

    async def _finish(
        self,
        run: LiveRun,
        conversation: Conversation,
        owner_id: uuid.UUID,
        question: str,
        turn: dict[str, Any],
        spent: dict[str, int],
        error: dict[str, str] | None,
    ) -> None:
        """The turn's end, in one transaction; its last events shown once it is committed."""
        last: list[Event] = []
        outcome: Exchange | AppError
        try:
            async with self.database().sessionmaker() as session, session.begin():
                if spent["prompt"] or spent["completion"]:
                    tokens = spent["prompt"] + spent["completion"]
                    await session.execute(SPEND, {"user": owner_id, "tokens": tokens})
                if error is None:
                    exchange = await self._store(session, conversation, question, turn, spent)
                    last.append(run.next("message", exchange.model_dump(mode="json")))
                    outcome = exchange
                else:
                    last.append(run.next("error", error))
                    outcome = _failure(error)
                status = "done" if error is None else "failed"
                last.append(Event(last[-1].seq + 1, "done", {"status": status}))
                unsaved = self._unsaved.pop(run.id, [])
                await _store_events(session, [(run.id, e) for e in [*unsaved, *last]])
                await session.execute(
                    update(Run).where(Run.id == run.id).values(status=status, updated_at=func.now())
                )
        except Exception:
            # The conversation was deleted meanwhile (its agent state, written as the turn
            # ended, goes too), or the database is away: the client that asked still hears how
            # it ended.
            failure = AGENT_FAILED
            if await self._deleted(conversation.id):
                failure = DELETED
                await self.agent.forget(conversation.id)
            else:
                logger.warning("Could not store the end of run %s", run.id, exc_info=True)
            last = [run.next("error", failure)]
            last.append(Event(last[-1].seq + 1, "done", {"status": "failed"}))
            outcome = _failure(failure)
        run.outcome = outcome
        for event in last:
            run.publish(event)

    async def _deleted(self, conversation_id: uuid.UUID) -> bool:
        try:
            async with self.database().read_sessionmaker() as session:
                found = await session.scalar(
                    select(Conversation.id).where(Conversation.id == conversation_id)
                )
        except Exception:
            return False  # the database is away: not known to be deleted
        return found is None

    @staticmethod
    async def _store(
        session: AsyncSession,
        conversation: Conversation,
        question: str,
        turn: dict[str, Any],
        spent: dict[str, int],
    ) -> Exchange:
        asked = Message(conversation_id=conversation.id, role="user", content=question)
        used = bool(spent["prompt"] or spent["completion"])
        answer = Message(
            conversation_id=conversation.id,
            role="assistant",
            content=turn.get("answer") or "",
            citations=[cited(passage) for passage in turn.get("passages", [])],
            # None without a model: nothing was counted.
            prompt_tokens=spent["prompt"] if used else None,
            completion_tokens=spent["completion"] if used else None,
        )
        session.add_all([asked, answer])
        await session.execute(
            update(Conversation)
            .where(Conversation.id == conversation.id)
            .values(updated_at=func.now())
        )
        await session.flush()  # server defaults come back with the INSERT (eager_defaults)
        return Exchange(
            question=MessageRead.model_validate(asked), answer=MessageRead.model_validate(answer)
        )

    async def _write(self) -> None:
        """Store new events in batches and renew the leases of the runs hosted here."""
        renewed = time.monotonic()
        while True:
            try:
                async with asyncio.timeout(LEASE_SECONDS):
                    await self._wake.wait()
                await asyncio.sleep(self.flush_seconds)  # let a batch gather
            except TimeoutError:
                pass
            self._wake.clear()
            await self._flush()
            if time.monotonic() - renewed >= LEASE_SECONDS and self.live:
                renewed = time.monotonic()
                try:
                    async with self.database().sessionmaker() as session, session.begin():
                        await session.execute(RENEW, {"ids": list(self.live)})
                except Exception:
                    logger.warning("Could not renew the leases of running turns", exc_info=True)

    async def _flush(self) -> None:
        batch, self._unsaved = self._unsaved, {}
        rows = [(run_id, e) for run_id, events in batch.items() for e in events]
        if not rows:
            return
        try:
            async with self.database().sessionmaker() as session, session.begin():
                await _store_events(session, rows)
        except Exception:
            # One run's conversation deleted meanwhile fails the batch: store the others.
            for run_id, events in batch.items():
                try:
                    async with self.database().sessionmaker() as session, session.begin():
                        await _store_events(session, [(run_id, e) for e in events])
                except Exception:
                    logger.info("Events of run %s not stored (deleted?)", run_id, exc_info=True)

    async def close(self) -> None:
        """Let running turns finish (SHUTDOWN_SECONDS at most; the rest fail as interrupted),
        then store what is left."""
        if self._tasks:
            _, late = await asyncio.wait(list(self._tasks), timeout=SHUTDOWN_SECONDS)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        self._writer.cancel()
        await asyncio.gather(self._writer, return_exceptions=True)
        await self._flush()

    async def find(
        self, conversation_id: uuid.UUID, last_event_id: str | None
    ) -> tuple[uuid.UUID, int]:
        """The run and the event to follow from: `Last-Event-ID`'s (`<run>:<n>`), or the
        conversation's latest run from its start."""
        after = 0
        query = select(Run.id).where(Run.conversation_id == conversation_id)
        if last_event_id:  # checked by the route: `<uuid>:<digits>`
            run, _, seq = last_event_id.partition(":")
            query = query.where(Run.id == uuid.UUID(run))
            after = int(seq)
        async with self.database().read_sessionmaker() as session:
            found = await session.scalar(query.order_by(Run.created_at.desc()).limit(1))
        if found is None:
            raise RunNotFound()
        return found, after

    async def replay(
        self, run_id: uuid.UUID, after: int, heartbeat: float
    ) -> AsyncIterator[Event | None]:
        """A run's events after the `after`-th, read from PostgreSQL as they are stored, until
        its `done` (made up, with an error before it, for a run whose process died). Reads
        only: a dead run is failed by the next question asked (`_reopen`)."""
        quiet_since = time.monotonic()
        stalled = 0
        while True:
            async with self.database().read_sessionmaker() as session:
                run = (
                    await session.execute(RUN_STATE, {"run": run_id, "expiry": LEASE_EXPIRY})
                ).one_or_none()
                rows = (
                    await session.execute(
                        select(RunEvent.seq, RunEvent.event, RunEvent.data)
                        .where(RunEvent.run_id == run_id, RunEvent.seq > after)
                        .order_by(RunEvent.seq)
                        .limit(1000)
                    )
                ).all()
            if run is None:
                return  # deleted with its conversation
            progressed = False
            for row in rows:
                if row.seq != after + 1:
                    break  # an earlier batch not committed yet: wait for it
                after, progressed = row.seq, True
                yield Event(row.seq, row.event, row.data)
                if row.event == "done":
                    return
            if progressed:
                quiet_since, stalled = time.monotonic(), 0
                continue
            if run.status != "running" or run.stale:
                stalled += 1
                if stalled > 2:  # its process died, before its `done` or with it unstored
                    yield Event(after + 1, "error", INTERRUPTED)
                    yield Event(after + 2, "done", {"status": "failed"})
                    return
            if time.monotonic() - quiet_since >= heartbeat:
                quiet_since = time.monotonic()
                yield None
            await asyncio.sleep(POLL_SECONDS)


async def _store_events(session: AsyncSession, rows: list[tuple[uuid.UUID, Event]]) -> None:
    await session.execute(
        STORE_EVENTS,
        {
            "run_ids": [run_id for run_id, _ in rows],
            "seqs": [e.seq for _, e in rows],
            "events": [e.event for _, e in rows],
            "datas": [json.dumps(e.data, default=str) for _, e in rows],
        },
    )


def _failure(error: dict[str, str]) -> AppError:
    """The non-streaming answer's error for an error event."""
    return ERRORS[error["code"]](error["detail"])
