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
import itertools
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, bindparam, delete, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.errors import AppError
from backend.db.session import Database
from backend.modules.file import service as file_service
from backend.modules.file.models import File
from backend.modules.file.storage import Storage
from backend.modules.knowledge_base.chunk_copy import NewChunks, copy_chunks
from backend.modules.knowledge_base.embeddings import Embedder
from backend.modules.knowledge_base.exceptions import EmptyDocument, SourceFileNotFound
from backend.modules.knowledge_base.isolation import Parsers
from backend.modules.knowledge_base.models import Chunk, Document, KnowledgeBase
from backend.modules.knowledge_base.parsing import Section, kind_of, reason
from backend.modules.knowledge_base.service import Piece, pieces_of
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
            AND (NOT :only_small OR d.pending_text IS NOT NULL AND d.char_count <= :small_chars)
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
    RETURNING documents.id, knowledge_base_id, source_file_id, pending_text, attempts,
        pending_text IS NOT NULL AND char_count <= :small_chars AS small
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
    FROM unnest(CAST(:ids AS uuid[]), CAST(:attempts AS int[])) AS held(id, attempts)
    WHERE documents.id = held.id AND documents.attempts = held.attempts
        AND documents.status = 'processing'
    RETURNING documents.id
    """
)
# Text bodies this short are claimed and stored together, INGESTION_BATCH_DOCUMENTS at a time:
# for a short document, a claim and a transaction of its own cost more than its chunks.
SMALL_CHARS = 64 * 1024


# A claimed document read and cut: its text's length, and the pieces that become its chunks.
Prepared = tuple["Claim", int, Sequence[Piece]]


@dataclass(frozen=True)
class Claim:
    """A document a worker holds: what it needs to process it, and which attempt this is."""

    id: uuid.UUID
    knowledge_base_id: uuid.UUID
    source_file_id: uuid.UUID | None
    pending_text: str | None
    attempts: int
    small: bool = False

    @classmethod
    def of(cls, row: Row[Any]) -> Claim:
        return cls(
            row.id,
            row.knowledge_base_id,
            row.source_file_id,
            row.pending_text,
            row.attempts,
            row.small,
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

    async def claim(self, limit: int = 1, *, only_small: bool = False) -> list[Claim]:
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
                    "only_small": only_small,
                    "small_chars": SMALL_CHARS,
                },
            )
            return [Claim.of(row) for row in rows]

    async def claim_batch(self) -> list[Claim]:
        """The next document in turn; when it is a small text body, more small ones with it
        (up to INGESTION_BATCH_DOCUMENTS), to be stored together."""
        claims = await self.claim()
        more = self.settings.ingestion_batch_documents - 1
        if claims and claims[0].small and more:
            claims += await self.claim(more, only_small=True)
        return claims

    async def process_leased(self, claims: list[Claim]) -> list[str]:
        """`process_batch`, renewing the claims' leases meanwhile; stopped (and every one
        "superseded") as soon as a renewal finds every document gone or taken over."""
        work = asyncio.create_task(self.process_batch(claims))
        keeper = asyncio.create_task(self._keep_leases(claims, work))
        try:
            return await work
        except asyncio.CancelledError:
            if keeper.done() and not keeper.cancelled() and keeper.result():
                log.info("documents %s deleted or taken over while processing: stopped", claims)
                return ["superseded"] * len(claims)
            raise
        finally:
            keeper.cancel()
            work.cancel()
            await asyncio.gather(keeper, work, return_exceptions=True)

    async def _keep_leases(self, claims: list[Claim], work: asyncio.Task[list[str]]) -> bool:
        """Renew until `work` ends; True (after cancelling it) when every claim was lost."""
        every = min(self.lease / 3, RENEW_SECONDS)
        values = {
            "ids": [claim.id for claim in claims],
            "attempts": [claim.attempts for claim in claims],
            "lease": self.lease,
        }
        while True:
            await asyncio.sleep(every)
            try:
                async with self.database.sessionmaker() as session, session.begin():
                    still = (await session.execute(RENEW, values)).first()
            except Exception:  # the database is away: the lease may run out, and that is safe
                log.warning("renewing the leases of %s failed", claims, exc_info=True)
                continue
            if still is None:
                work.cancel()
                return True

    async def process(self, claim: Claim) -> str:
        """Chunk, embed and store one claimed document; its new status."""
        [status] = await self.process_batch([claim])
        return status

    async def process_batch(self, claims: list[Claim]) -> list[str]:
        """Chunk, embed and store claimed documents, in one transaction; each one's new status.
        A document that cannot be read fails (or is retried) alone; a failure of the batch's
        embedding or write puts every one of them back for a retry."""
        started = time.perf_counter()
        statuses: dict[uuid.UUID, str] = {}
        prepared: list[Prepared] = []
        for claim in claims:
            try:
                sections = await self._sections(claim)
                pieces = pieces_of(sections, self.settings)
                if not pieces:
                    raise EmptyDocument()
            except Exception as exc:
                statuses[claim.id] = await self._failed(claim, exc)
                continue
            prepared.append((claim, sum(len(section.text) for section in sections), pieces))
        try:
            if prepared:
                statuses |= await self._store(prepared)
        except Exception as exc:
            if not isinstance(exc, AppError):  # logged once for the batch, not per document
                log.warning(
                    "storing documents %s failed", [c.id for c, _, _ in prepared], exc_info=exc
                )
            for claim, _, _ in prepared:
                statuses[claim.id] = await self._failed(claim, exc, logged=True)
            return [statuses[claim.id] for claim in claims]
        ready = [(claim, pieces) for claim, _, pieces in prepared if statuses[claim.id] == "ready"]
        seconds = time.perf_counter() - started
        if len(ready) == 1:
            [(claim, pieces)] = ready
            log.info("document %s ready: %d chunks in %.2f s", claim.id, len(pieces), seconds)
        elif ready:
            chunks = sum(len(pieces) for _, pieces in ready)
            log.info(
                "%d documents ready together: %d chunks in %.2f s", len(ready), chunks, seconds
            )
        return [statuses[claim.id] for claim in claims]

    async def _store(self, prepared: list[Prepared]) -> dict[uuid.UUID, str]:
        """The documents' chunks written, and the documents marked ready, in one transaction;
        only those still held by these claims ("superseded" the others)."""
        # A remote embedder is asked before the documents are locked: rate limits and retries
        # can take minutes, and a transaction open that long would hold the rows (a user's
        # delete would wait) and PostgreSQL's cleanup back. A model in this process embeds
        # while PostgreSQL writes (chunk_copy.py).
        vectors: Embedder | list[list[float]] = self.embedder
        if not self.embedder.local:
            every = [piece.text for _, _, pieces in prepared for piece in pieces]
            vectors = await self.embedder.embed(every)
        async with self.database.sessionmaker() as session, session.begin():
            stored = await _still_held(session, [claim for claim, _, _ in prepared])
            if isinstance(vectors, list):  # the held documents' vectors
                given = iter(vectors)
                vectors = [
                    vector
                    for claim, _, pieces in prepared
                    for vector in itertools.islice(given, len(pieces))
                    if claim.id in stored
                ]
            held = [(c, chars, pieces) for c, chars, pieces in prepared if c.id in stored]
            if held:
                ids = [claim.id for claim, _, _ in held]
                await session.execute(delete(Chunk).where(Chunk.document_id.in_(ids)))
                await copy_chunks(
                    session,
                    documents=[
                        NewChunks(c.id, c.knowledge_base_id, pieces) for c, _, pieces in held
                    ],
                    vectors=vectors,
                    language=self.settings.search_language,
                )
                await _ready(session, held, before=stored)
        return {
            claim.id: "ready" if claim.id in stored else "superseded" for claim, _, _ in prepared
        }

    async def _failed(self, claim: Claim, exc: Exception, *, logged: bool = False) -> str:
        """The document back in the queue for a retry (a failure worth one), or failed."""
        if isinstance(exc, AppError):
            if exc.status_code >= 500 and claim.attempts < self.settings.ingestion_max_attempts:
                return await self._retry(claim, exc.detail)
            return await self._fail(claim, exc.detail)
        # The database, the network: worth another try.
        if not logged:
            log.warning("document %s attempt %d failed", claim.id, claim.attempts, exc_info=exc)
        # One line: a database error's full text (its SQL) is for the log, not the API.
        if claim.attempts < self.settings.ingestion_max_attempts:
            return await self._retry(claim, reason(exc))
        return await self._fail(claim, reason(exc))

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
        """Process what is claimable now, a batch at a time, until nothing is (the tests and
        the quality bench run ingestion this way). The number of documents processed."""
        done = 0
        while claims := await self.claim_batch():
            await self.process_batch(claims)
            done += len(claims)
        return done


# The held ones among documents (id, attempts), locked in a fixed order (concurrent batches
# wait for each other instead of deadlocking), with the chunk counts they had.
HELD = text(
    """
    SELECT d.id, d.chunk_count FROM documents AS d
    JOIN unnest(CAST(:ids AS uuid[]), CAST(:attempts AS int[])) AS held(id, attempts)
        ON d.id = held.id AND d.attempts = held.attempts
    WHERE d.status = 'processing'
    ORDER BY d.id
    FOR UPDATE OF d
    """
)


async def _still_held(session: AsyncSession, claims: list[Claim]) -> dict[uuid.UUID, int]:
    """Of the claimed documents, those that still exist and that no later claim took over
    (their lease ran out), locked: each one's stored chunk count."""
    values = {"ids": [c.id for c in claims], "attempts": [c.attempts for c in claims]}
    return {row.id: row.chunk_count for row in await session.execute(HELD, values)}


async def _ready(
    session: AsyncSession,
    held: list[Prepared],
    *,
    before: dict[uuid.UUID, int],
) -> None:
    """The documents are ready; their knowledge bases count their chunks (in SQL: concurrent
    documents must not lose each other's counts)."""
    await session.execute(
        update(Document),
        [
            {
                "id": claim.id,
                "status": "ready",
                "chunk_count": len(pieces),
                "char_count": chars,
                "pending_text": None,
                "error": None,
                "locked_until": None,
            }
            for claim, chars, pieces in held
        ],
    )
    added: dict[uuid.UUID, int] = {}
    for claim, _, pieces in held:
        added[claim.knowledge_base_id] = (
            added.get(claim.knowledge_base_id, 0) + len(pieces) - before[claim.id]
        )
    for kb_id, chunks in sorted(added.items()):
        await session.execute(
            update(KnowledgeBase)
            .where(KnowledgeBase.id == kb_id)
            .values(chunk_count=KnowledgeBase.chunk_count + chunks)
        )


class Worker:
    """Claims and processes documents until stopped, at most `concurrency` batches at a time (a
    document alone, or small text bodies together); waits `poll` seconds when there is nothing
    to do (or until a batch in flight is done)."""

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
        running: dict[asyncio.Task[list[str]], list[Claim]] = {}
        try:
            while True:
                self.last_turn = time.monotonic()
                free = self.concurrency - len(running)
                claims = await self._claim() if free else []
                if claims:
                    task = asyncio.create_task(self.ingestion.process_leased(claims))
                    running[task] = claims
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
            unfinished = [c for task, claims in running.items() if not task.done() for c in claims]
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            await asyncio.shield(self.ingestion.release(unfinished))

    async def _claim(self) -> list[Claim]:
        try:
            claims = await self.ingestion.claim_batch()
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

    def _done(
        self, running: dict[asyncio.Task[list[str]], list[Claim]]
    ) -> Callable[[asyncio.Task[list[str]]], None]:
        def done(task: asyncio.Task[list[str]]) -> None:
            claims = running.pop(task, [])
            if task.cancelled():
                return
            self.processed += len(claims)
            if task.exception() is not None:
                log.error("processing documents failed", exc_info=task.exception())

        return done
