"""Documents are chunked, embedded and indexed in the background, by a worker.

The queue is the `documents` table itself: a document is added `pending` (in the request's
transaction, so a document and its job exist together or not at all), and a worker claims it
(`processing`), stores its chunks and marks it `ready`, or `failed` with the reason. Claims are
`FOR UPDATE SKIP LOCKED`, so any number of workers share the work, and fair: each claim takes
the owners' oldest documents in turns (an owner's n-th queued document waits behind every
other owner's first), so a flood from one user does not starve the rest. Claims are leased: the
worker renews the lease while it works, and one that dies holding a document loses it when
`locked_until` passes; another takes it over. Attempts count at claim: a document whose worker
died INGESTION_MAX_ATTEMPTS times (a file that kills its parser's host) ends `failed` with the
reason instead of being claimed again. A failure worth retrying (the embedder, the storage,
the database) puts the document back with a backoff until INGESTION_MAX_ATTEMPTS; a file that
cannot be read fails at once. Parsing runs in a child process (isolation.py), killed when the
lease renewal finds the document gone (deleted, or its knowledge base). The chunks are written
in the same transaction that marks the document `ready`, after deleting any it has, and only by
the worker whose claim is still current: a retried document never has its chunks twice.

Why not a job library (procrastinate): it needs a second PostgreSQL driver (psycopg) and a
schema of its own to migrate, for one kind of job whose row already exists here.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, bindparam, delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.errors import AppError
from backend.db.session import Database
from backend.modules.file import service as file_service
from backend.modules.file.models import File
from backend.modules.file.storage import Storage
from backend.modules.knowledge_base.chunk_copy import copy_chunks
from backend.modules.knowledge_base.embeddings import Embedder
from backend.modules.knowledge_base.exceptions import EmptyDocument, SourceFileNotFound
from backend.modules.knowledge_base.isolation import Parsers
from backend.modules.knowledge_base.models import Chunk, Document, KnowledgeBase
from backend.modules.knowledge_base.parsing import Section, kind_of, reason
from backend.modules.knowledge_base.service import pieces_of
from backend.modules.knowledge_base.settings import KnowledgeBaseSettings

log = logging.getLogger("backend.ingestion")

# A claim holds INGESTION_LEASE_SECONDS unless renewed; the worker renews it every third of that
# (at most every RENEW_SECONDS, which is also how soon a deleted document's work stops).
RENEW_SECONDS = 5.0
# The wait before retry n is BACKOFF_SECONDS * 2**(n-1), at most MAX_BACKOFF_SECONDS.
BACKOFF_SECONDS = 2.0
MAX_BACKOFF_SECONDS = 300.0

# An owner's turn: how many of its documents are in flight or ahead of this one in its queue.
CLAIM = text(
    """
    WITH in_flight AS (
        SELECT kb.owner_id, count(*) AS busy
        FROM documents d JOIN knowledge_bases kb ON kb.id = d.knowledge_base_id
        WHERE d.status = 'processing' AND d.locked_until >= now()
        GROUP BY kb.owner_id
    ), fair AS (
        SELECT d.id, d.run_after, coalesce(f.busy, 0)
            + row_number() OVER (PARTITION BY kb.owner_id ORDER BY d.run_after, d.id) AS turn
        FROM documents d
        JOIN knowledge_bases kb ON kb.id = d.knowledge_base_id
        LEFT JOIN in_flight f ON f.owner_id = kb.owner_id
        WHERE d.status IN ('pending', 'processing') AND d.run_after <= now()
            AND (d.locked_until IS NULL OR d.locked_until < now())
            AND d.attempts < :max_attempts
        ORDER BY turn, d.run_after, d.id
        LIMIT :window
    ), taken AS (
        SELECT documents.id FROM documents JOIN fair ON fair.id = documents.id
        WHERE documents.status IN ('pending', 'processing')
            AND (documents.locked_until IS NULL OR documents.locked_until < now())
        ORDER BY fair.turn, fair.run_after, fair.id
        LIMIT :limit
        FOR UPDATE OF documents SKIP LOCKED
    )
    UPDATE documents SET status = 'processing', attempts = attempts + 1,
        locked_until = now() + make_interval(secs => :lease)
    FROM taken WHERE documents.id = taken.id
    RETURNING documents.id, knowledge_base_id, source_file_id, pending_text, attempts
    """
)
# Documents whose lease ran out on their last attempt: their worker died every time.
GIVE_UP = text(
    """
    UPDATE documents SET status = 'failed', locked_until = NULL,
        error = 'Processing stopped ' || attempts || ' times without finishing (the worker '
            || 'was killed or crashed each time: INGESTION_MAX_ATTEMPTS)'
    WHERE status = 'processing' AND locked_until < now() AND attempts >= :max_attempts
    """
)
RENEW = text(
    """
    UPDATE documents SET locked_until = now() + make_interval(secs => :lease)
    WHERE id = :id AND attempts = :attempts AND status = 'processing'
    RETURNING id
    """
)


@dataclass(frozen=True)
class Claim:
    """A document a worker holds: what it needs to process it, and which attempt this is."""

    id: uuid.UUID
    knowledge_base_id: uuid.UUID
    source_file_id: uuid.UUID | None
    pending_text: str | None
    attempts: int

    @classmethod
    def of(cls, row: Row[Any]) -> Claim:
        return cls(
            row.id, row.knowledge_base_id, row.source_file_id, row.pending_text, row.attempts
        )


class Ingestion:
    """Processes claimed documents with the process's embedder and storage."""

    def __init__(
        self,
        database: Database,
        *,
        embedder: Embedder,
        storage: Storage,
        parsers: Parsers,
        settings: KnowledgeBaseSettings,
    ) -> None:
        self.database = database
        self.embedder = embedder
        self.storage = storage
        self.parsers = parsers
        self.settings = settings
        self.lease = settings.ingestion_lease_seconds

    async def claim(self, limit: int = 1) -> list[Claim]:
        max_attempts = self.settings.ingestion_max_attempts
        async with self.database.sessionmaker() as session, session.begin():
            await session.execute(GIVE_UP, {"max_attempts": max_attempts})
            rows = await session.execute(
                CLAIM,
                {
                    "lease": self.lease,
                    "limit": limit,
                    "window": max(limit, 64),
                    "max_attempts": max_attempts,
                },
            )
            return [Claim.of(row) for row in rows]

    async def process_leased(self, claim: Claim) -> str:
        """`process`, renewing the claim's lease meanwhile; stopped (and "superseded") as soon
        as a renewal finds the document gone or taken over."""
        work = asyncio.create_task(self.process(claim))
        keeper = asyncio.create_task(self._keep_lease(claim, work))
        try:
            return await work
        except asyncio.CancelledError:
            if keeper.done() and not keeper.cancelled() and keeper.result():
                log.info("document %s deleted or taken over while processing: stopped", claim.id)
                return "superseded"
            raise
        finally:
            keeper.cancel()
            work.cancel()
            await asyncio.gather(keeper, work, return_exceptions=True)

    async def _keep_lease(self, claim: Claim, work: asyncio.Task[str]) -> bool:
        """Renew until `work` ends; True (after cancelling it) when the claim was lost."""
        every = min(self.lease / 3, RENEW_SECONDS)
        values = {"id": claim.id, "attempts": claim.attempts, "lease": self.lease}
        while True:
            await asyncio.sleep(every)
            try:
                async with self.database.sessionmaker() as session, session.begin():
                    still = (await session.execute(RENEW, values)).first()
            except Exception:  # the database is away: the lease may run out, and that is safe
                log.warning("renewing the lease of document %s failed", claim.id, exc_info=True)
                continue
            if still is None:
                work.cancel()
                return True

    async def process(self, claim: Claim) -> str:
        """Chunk, embed and store one claimed document; its new status."""
        started = time.perf_counter()
        try:
            sections = await self._sections(claim)
            pieces = pieces_of(sections, self.settings)
            if not pieces:
                raise EmptyDocument()
            # A remote embedder is asked before the document is locked: rate limits and retries
            # can take minutes, and a transaction open that long would hold the row (a user's
            # delete would wait) and PostgreSQL's cleanup back. A model in this process embeds
            # while PostgreSQL writes (chunk_copy.py).
            vectors: Embedder | list[list[float]] = self.embedder
            if not self.embedder.local:
                vectors = await self.embedder.embed([piece.text for piece in pieces])
            async with self.database.sessionmaker() as session, session.begin():
                stored = await self._still_mine(session, claim)
                if stored is None:
                    return "superseded"
                await session.execute(delete(Chunk).where(Chunk.document_id == claim.id))
                await copy_chunks(
                    session,
                    document_id=claim.id,
                    kb_id=claim.knowledge_base_id,
                    pieces=pieces,
                    vectors=vectors,
                    language=self.settings.search_language,
                )
                await _ready(session, claim, chunks=len(pieces), before=stored, sections=sections)
        except AppError as exc:
            if exc.status_code >= 500 and claim.attempts < self.settings.ingestion_max_attempts:
                return await self._retry(claim, exc.detail)
            return await self._fail(claim, exc.detail)
        except Exception as exc:  # the database, the network: worth another try
            log.warning("document %s attempt %d failed", claim.id, claim.attempts, exc_info=True)
            # One line: a database error's full text (its SQL) is for the log, not the API.
            if claim.attempts < self.settings.ingestion_max_attempts:
                return await self._retry(claim, reason(exc))
            return await self._fail(claim, reason(exc))
        log.info(
            "document %s ready: %d chunks in %.2f s",
            claim.id,
            len(pieces),
            time.perf_counter() - started,
        )
        return "ready"

    async def _sections(self, claim: Claim) -> list[Section]:
        if claim.pending_text is not None:
            return await self.parsers.parse("markdown", claim.pending_text.encode())
        file = None
        if claim.source_file_id is not None:  # NULL once the file is deleted (ON DELETE SET NULL)
            async with self.database.read_sessionmaker() as session:
                file = await session.get(File, claim.source_file_id)
        if file is None:
            raise SourceFileNotFound("The source file was deleted before it was processed")
        kind = kind_of(file.content_type, file.filename)
        assert kind is not None  # checked when the document was added
        data = await file_service.read_content(file=file, storage=self.storage)
        return await self.parsers.parse(kind, data)

    async def _still_mine(self, session: AsyncSession, claim: Claim) -> int | None:
        """The document's stored chunk count, locked, if it still exists and no later claim took
        it over (its lease ran out); else None."""
        row = (
            await session.execute(
                select(Document.attempts, Document.chunk_count)
                .where(Document.id == claim.id, Document.status == "processing")
                .with_for_update()
            )
        ).one_or_none()
        return row.chunk_count if row is not None and row.attempts == claim.attempts else None

    async def _retry(self, claim: Claim, reason: str) -> str:
        wait = min(BACKOFF_SECONDS * 2 ** (claim.attempts - 1), MAX_BACKOFF_SECONDS)
        await self._set(claim, status="pending", error=reason, wait=wait)
        return "pending"

    async def _fail(self, claim: Claim, reason: str) -> str:
        await self._set(claim, status="failed", error=reason, wait=0.0)
        return "failed"

    async def _set(self, claim: Claim, *, status: str, error: str, wait: float) -> None:
        async with self.database.sessionmaker() as session, session.begin():
            await session.execute(
                update(Document)
                .where(Document.id == claim.id, Document.attempts == claim.attempts)
                .values(
                    status=status,
                    error=error[:2000],
                    locked_until=None,
                    run_after=text("now() + make_interval(secs => :wait)").bindparams(
                        bindparam("wait", wait)
                    ),
                )
            )

    async def release(self, claims: list[Claim]) -> None:
        """Hand documents back unprocessed (this attempt not counted)."""
        if not claims:
            return
        try:
            async with self.database.sessionmaker() as session, session.begin():
                for claim in claims:
                    await session.execute(
                        update(Document)
                        .where(Document.id == claim.id, Document.attempts == claim.attempts)
                        .values(status="pending", locked_until=None, attempts=claim.attempts - 1)
                    )
        except Exception:  # their leases run out instead
            log.warning("handing back %d documents failed", len(claims), exc_info=True)

    async def drain(self) -> int:
        """Process what is claimable now, one at a time, until nothing is (the tests run
        ingestion this way). The number of documents processed."""
        done = 0
        while claims := await self.claim():
            for claim in claims:
                await self.process(claim)
                done += 1
        return done


async def _ready(
    session: AsyncSession, claim: Claim, *, chunks: int, before: int, sections: list[Section]
) -> None:
    """The document is ready; its knowledge base counts its chunks (in SQL: concurrent
    documents must not lose each other's counts)."""
    await session.execute(
        update(Document)
        .where(Document.id == claim.id)
        .values(
            status="ready",
            chunk_count=chunks,
            char_count=sum(len(section.text) for section in sections),
            pending_text=None,
            error=None,
            locked_until=None,
        )
    )
    await session.execute(
        update(KnowledgeBase)
        .where(KnowledgeBase.id == claim.knowledge_base_id)
        .values(chunk_count=KnowledgeBase.chunk_count + chunks - before)
    )


class Worker:
    """Claims and processes documents until stopped, at most `concurrency` at a time; waits
    `poll` seconds when there is nothing to do (or until a document in flight is done)."""

    def __init__(self, ingestion: Ingestion, *, concurrency: int, poll: float) -> None:
        self.ingestion = ingestion
        self.concurrency = concurrency
        self.poll = poll
        self.last_turn = time.monotonic()
        self.processed = 0
        self.failures = 0
        # It turns at least every `poll` seconds (every 10 s at most while the database is away).
        self.stuck_after = max(30.0, 10 * poll)

    async def run(self) -> None:
        running: dict[asyncio.Task[str], Claim] = {}
        try:
            while True:
                self.last_turn = time.monotonic()
                free = self.concurrency - len(running)
                claims = await self._claim(free) if free else []
                for claim in claims:
                    task = asyncio.create_task(self.ingestion.process_leased(claim))
                    running[task] = claim
                    task.add_done_callback(self._done(running))
                if claims and len(running) < self.concurrency:
                    continue  # maybe more are waiting
                # Nothing to claim, or every slot busy: until a slot frees or the poll.
                if running:
                    await asyncio.wait(
                        set(running), timeout=self.poll, return_when=asyncio.FIRST_COMPLETED
                    )
                else:
                    await asyncio.sleep(self.poll)
        finally:
            # Stopping (SIGTERM, shutdown): what is in flight goes back to the queue now rather
            # than when its lease runs out.
            unfinished = [claim for task, claim in running.items() if not task.done()]
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            await asyncio.shield(self.ingestion.release(unfinished))

    async def _claim(self, limit: int) -> list[Claim]:
        try:
            claims = await self.ingestion.claim(limit)
        except Exception as exc:  # the database is away (or behind): back off, say it once
            if not self.failures:
                log.warning("claiming documents failed, retrying: %s", reason(exc))
            self.failures += 1
            # At most 10 s: the loop keeps turning well within the worker's liveness bound (30 s),
            # so a database outage does not get the worker restarted over and over.
            await asyncio.sleep(min(10.0, self.poll * 2**self.failures))
            return []
        if self.failures:
            log.info("claiming documents works again")
            self.failures = 0
        return claims

    def _done(self, running: dict[asyncio.Task[str], Claim]) -> Callable[[asyncio.Task[str]], None]:
        def done(task: asyncio.Task[str]) -> None:
            running.pop(task, None)
            if task.cancelled():
                return
            self.processed += 1
            if task.exception() is not None:
                log.error("processing a document failed", exc_info=task.exception())

        return done
