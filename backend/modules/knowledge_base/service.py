from __future__ import annotations

import contextlib
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Text,
    bindparam,
    cast,
    func,
    select,
    text,
    union_all,
)
from sqlalchemy import update as sql_update
from sqlalchemy.dialects.postgresql import REGCONFIG, TSQUERY
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from backend.core.pagination import PageParams, paged
from backend.db.session import release_connection
from backend.db.vector import query_vector
from backend.modules.file import service as file_service
from backend.modules.file.exceptions import FileNotFound
from backend.modules.knowledge_base.chunking import split_text
from backend.modules.knowledge_base.embeddings import Embedder
from backend.modules.knowledge_base.exceptions import (
    DocumentLimitReached,
    DocumentNotFound,
    DocumentTooLarge,
    EmbeddingModelChanged,
    KnowledgeBaseNotFound,
    SearchTimedOut,
    SourceFileNotFound,
    TooManyQueuedDocuments,
    TooManySearches,
    UnsupportedDocumentType,
)
from backend.modules.knowledge_base.models import EMBEDDING_DIM, Chunk, Document, KnowledgeBase
from backend.modules.knowledge_base.parsing import Section, kind_of
from backend.modules.knowledge_base.rerank import Reranker
from backend.modules.knowledge_base.schemas import (
    DocumentCreate,
    KnowledgeBaseCreate,
    KnowledgeBaseUpdate,
    SearchMode,
    SearchResult,
)
from backend.modules.knowledge_base.settings import KnowledgeBaseSettings
from backend.modules.user.models import User


async def create(session: AsyncSession, *, owner: User, data: KnowledgeBaseCreate) -> KnowledgeBase:
    kb = KnowledgeBase(owner_id=owner.id, name=data.name, description=data.description)
    session.add(kb)
    await session.flush()
    return kb


# Built once with bind parameters (see backend/core/pagination.py): cheaper than per request.
OWNED = select(KnowledgeBase).where(
    KnowledgeBase.id == bindparam("kb_id"), KnowledgeBase.owner_id == bindparam("owner_id")
)
OLDEST_FIRST = paged(
    select(KnowledgeBase)
    .where(KnowledgeBase.owner_id == bindparam("owner_id"))
    .order_by(KnowledgeBase.created_at, KnowledgeBase.id)
)
DOCUMENT = select(Document).where(
    Document.id == bindparam("doc_id"), Document.knowledge_base_id == bindparam("kb_id")
)
DOCUMENTS = paged(
    select(Document)
    .where(Document.knowledge_base_id == bindparam("kb_id"))
    .order_by(Document.created_at, Document.id)
)


async def get(session: AsyncSession, *, owner: User, kb_id: uuid.UUID) -> KnowledgeBase:
    """The owner's knowledge base; another user's is as absent as a missing one."""
    kb = await session.scalar(OWNED, {"kb_id": kb_id, "owner_id": owner.id})
    if kb is None:
        raise KnowledgeBaseNotFound()
    return kb


async def list(session: AsyncSession, *, owner: User, page: PageParams) -> Sequence[KnowledgeBase]:
    return (await session.scalars(OLDEST_FIRST, page.bind(owner_id=owner.id))).all()


async def update(
    session: AsyncSession, *, kb: KnowledgeBase, data: KnowledgeBaseUpdate
) -> KnowledgeBase:
    for field in data.model_fields_set:
        value = getattr(data, field)
        if field == "name" and value is None:
            continue
        setattr(kb, field, value)
    await session.flush()
    return kb


async def delete(session: AsyncSession, *, kb: KnowledgeBase) -> None:
    # Documents and chunks go with it (ON DELETE CASCADE).
    await session.delete(kb)
    await session.flush()


async def _check_file(
    session: AsyncSession, *, owner: User, file_id: uuid.UUID, settings: KnowledgeBaseSettings
) -> str:
    """The uploaded file's name, once it is known to be the caller's, of a format that can be
    read and within the size limit; it is read and parsed by the worker."""
    try:
        file = await file_service.get(session, owner=owner, file_id=file_id)
    except FileNotFound:
        raise SourceFileNotFound() from None
    if kind_of(file.content_type, file.filename) is None:
        raise UnsupportedDocumentType(file.content_type)
    if file.size > settings.max_document_bytes:
        raise DocumentTooLarge(settings.max_document_bytes)
    return file.filename


@dataclass(frozen=True)
class Piece:
    """A chunk to store: its text and where in the document it came from."""

    text: str
    page: int | None
    section: str | None


def pieces_of(sections: Sequence[Section], settings: KnowledgeBaseSettings) -> Sequence[Piece]:
    """Each section cut on its own: a chunk never spans two pages or two headings."""
    size, overlap = settings.chunk_size, settings.chunk_overlap
    return [
        Piece(text, section.page, section.heading)
        for section in sections
        for text in split_text(section.text, size=size, overlap=overlap)
    ]


async def create_document(
    session: AsyncSession,
    *,
    owner: User,
    kb: KnowledgeBase,
    data: DocumentCreate,
    settings: KnowledgeBaseSettings,
) -> Document:
    """Check the source and queue the document (`pending`): a worker chunks and embeds it
    (backend/modules/knowledge_base/ingestion.py)."""
    if data.file_id is not None:
        filename = await _check_file(session, owner=owner, file_id=data.file_id, settings=settings)
        title = data.title or filename
    else:
        assert data.text is not None
        assert data.title is not None
        if len(data.text.encode()) > settings.max_document_bytes:
            raise DocumentTooLarge(settings.max_document_bytes)
        title = data.title
    await _check_user_limits(session, owner=owner, settings=settings)
    document = Document(
        knowledge_base_id=kb.id,
        title=title,
        source_file_id=data.file_id,
        pending_text=data.text,
        status="pending",
        chunk_count=0,
        char_count=0,
    )
    session.add(document)
    await session.flush()
    return document


async def _check_user_limits(
    session: AsyncSession, *, owner: User, settings: KnowledgeBaseSettings
) -> None:
    """Refuse a document past the owner's limits (counted in PostgreSQL, under a lock per owner
    until the request commits, so concurrent requests on any replica count each other)."""
    await session.execute(LOCK_OWNER_DOCUMENTS, {"key": f"documents:{owner.id}"})
    held = (await session.execute(OWNER_DOCUMENTS, {"owner_id": owner.id})).one()
    if held.documents >= settings.max_documents_per_user:
        raise DocumentLimitReached(
            f"You have {held.documents} documents; the limit is "
            f"{settings.max_documents_per_user} (MAX_DOCUMENTS_PER_USER)"
        )
    if held.chunks >= settings.max_chunks_per_user:
        raise DocumentLimitReached(
            f"Your documents hold {held.chunks} chunks; the limit is "
            f"{settings.max_chunks_per_user} (MAX_CHUNKS_PER_USER)"
        )
    if held.queued >= settings.max_queued_documents_per_user:
        raise TooManyQueuedDocuments(held.queued, settings.max_queued_documents_per_user)


LOCK_OWNER_DOCUMENTS = text("SELECT pg_advisory_xact_lock(hashtext(:key))")
OWNER_DOCUMENTS = text(
    """
    SELECT count(*) AS documents, coalesce(sum(d.chunk_count), 0) AS chunks,
        count(*) FILTER (WHERE d.status IN ('pending', 'processing')) AS queued
    FROM documents d JOIN knowledge_bases kb ON kb.id = d.knowledge_base_id
    WHERE kb.owner_id = :owner_id
    """
)


async def get_document(session: AsyncSession, *, kb: KnowledgeBase, doc_id: uuid.UUID) -> Document:
    document = await session.scalar(DOCUMENT, {"doc_id": doc_id, "kb_id": kb.id})
    if document is None:
        raise DocumentNotFound()
    return document


async def _add_to_count(session: AsyncSession, kb: KnowledgeBase, delta: int) -> None:
    # In SQL, not Python: two concurrent requests must not lose each other's counts.
    counted = await session.execute(
        sql_update(KnowledgeBase)
        .where(KnowledgeBase.id == kb.id)
        .values(chunk_count=KnowledgeBase.chunk_count + delta)
        .returning(KnowledgeBase.chunk_count, KnowledgeBase.updated_at)
    )
    chunk_count, updated_at = counted.one()
    set_committed_value(kb, "chunk_count", chunk_count)
    set_committed_value(kb, "updated_at", updated_at)


async def list_documents(
    session: AsyncSession, *, kb: KnowledgeBase, page: PageParams
) -> Sequence[Document]:
    return (await session.scalars(DOCUMENTS, page.bind(kb_id=kb.id))).all()


async def delete_document(session: AsyncSession, *, kb: KnowledgeBase, doc_id: uuid.UUID) -> None:
    # Locked: a worker storing its chunks finishes first, and its count is the one taken off.
    document = await session.scalar(DOCUMENT.with_for_update(), {"doc_id": doc_id, "kb_id": kb.id})
    if document is None:
        raise DocumentNotFound()
    await session.delete(document)
    await session.flush()
    await _add_to_count(session, kb, -document.chunk_count)


async def search(
    session: AsyncSession,
    *,
    kb: KnowledgeBase,
    query: str,
    top_k: int,
    mode: SearchMode = "hybrid",
    embedder: Embedder,
    settings: KnowledgeBaseSettings,
    reranker: Reranker | None = None,
) -> Sequence[SearchResult]:
    """The `top_k` chunks of this knowledge base that best answer the query, best first.

    `vector`: nearest by cosine. Small knowledge bases are scanned exactly; large ones use the
    HNSW index with pgvector's iterative scan, which keeps walking the graph until `top_k` rows
    pass the knowledge-base filter instead of returning fewer. `keyword`: PostgreSQL full-text
    search as a search box reads it (`websearch_to_tsquery`: every word, "quoted phrases",
    -exclusions, `or`), ranked by `ts_rank_cd`. `hybrid`: the vector ranking and a keyword
    ranking of chunks with any of the query's words, the first HYBRID_CANDIDATES of each fused
    by reciprocal rank (score = sum of 1 / (RRF_K + rank)), in one statement.

    With a reranker, RERANK_CANDIDATES chunks are found that way and the reranker's top_k of
    them returned, scored by it.
    """
    wanted = top_k if reranker is None else max(top_k, settings.rerank_candidates)
    limit = settings.search_concurrency_per_user
    if _running.get(kb.owner_id, 0) >= limit:
        raise TooManySearches(limit)
    _running[kb.owner_id] = _running.get(kb.owner_id, 0) + 1
    try:
        await session.execute(
            SEARCH_TIMEOUT, {"ms": str(int(settings.search_timeout_seconds * 1000))}
        )
        found = await _search(
            session,
            kb=kb,
            query=query,
            top_k=wanted,
            mode=mode,
            embedder=embedder,
            settings=settings,
        )
    except DBAPIError as exc:
        if "different vector dimensions" in str(exc.orig):
            raise EmbeddingModelChanged() from None
        if "statement timeout" in str(exc.orig):
            raise SearchTimedOut(settings.search_timeout_seconds) from None
        raise
    finally:
        with contextlib.suppress(DBAPIError):  # a transaction the error aborted ends anyway
            await session.execute(NO_SEARCH_TIMEOUT)
        _running[kb.owner_id] -= 1
        if not _running[kb.owner_id]:
            del _running[kb.owner_id]
    if reranker is None:
        return found
    await release_connection(session)  # the reranker's round trip needs no connection
    return await reranker.rerank(query, found, top_k)


# Searches running in this process, per owner (SEARCH_CONCURRENCY_PER_USER holds per replica).
_running: dict[uuid.UUID, int] = {}
# The search's statements stop after SEARCH_TIMEOUT_SECONDS; the connection (a read session's,
# autocommit, pooled) gets the server's default back after.
SEARCH_TIMEOUT = text("SELECT set_config('statement_timeout', :ms, false)")
NO_SEARCH_TIMEOUT = text("RESET statement_timeout")


async def _search(
    session: AsyncSession,
    *,
    kb: KnowledgeBase,
    query: str,
    top_k: int,
    mode: SearchMode,
    embedder: Embedder,
    settings: KnowledgeBaseSettings,
) -> Sequence[SearchResult]:
    if mode == "keyword":
        parameters = {"kb_id": kb.id, "query": query, "language": settings.search_language}
        rows = (await session.execute(KEYWORD, parameters | {"top_k": top_k})).all()
        return [_result(r, r.score) for r in rows]
    [vector] = await embedder.embed([query], kind="query")
    if mode == "vector":
        return await nearest_chunks(session, kb=kb, vector=vector, top_k=top_k, settings=settings)
    if uses_exact_search(kb, settings):
        statement = EXACT_HYBRID
    else:
        await use_index_settings(session, settings)
        statement = INDEXED_HYBRID
    parameters = {
        "kb_id": kb.id,
        "vector": vector,
        "query": query,
        "language": settings.search_language,
        "candidates": max(top_k, HYBRID_CANDIDATES),
        "top_k": top_k,
    }
    rows = (await session.execute(statement, parameters)).all()
    return [_result(r, r.score) for r in rows]


# What a search result shows of a chunk: its text and where it came from.
RESULT_COLUMNS = (Chunk.id, Chunk.document_id, Chunk.text, Chunk.page, Chunk.section)


def _result_columns(columns: Any) -> tuple[Any, ...]:
    """RESULT_COLUMNS as a subquery or CTE (`columns`: its `.c`) exposes them."""
    return tuple(columns[column.key] for column in RESULT_COLUMNS)


def _result(row: Any, score: float) -> SearchResult:
    return SearchResult(
        chunk_id=row.id,
        document_id=row.document_id,
        text=row.text,
        page=row.page,
        section=row.section,
        score=score,
    )


def uses_exact_search(kb: KnowledgeBase, settings: KnowledgeBaseSettings) -> bool:
    """Small knowledge bases are scanned exactly; larger ones go through the HNSW index."""
    return kb.chunk_count <= settings.search_exact_max_chunks


def _exact_nearest(limit: str = "top_k") -> Select[Any]:
    # MATERIALIZED: the planner computes every distance in the knowledge base (exact) instead of
    # walking the index and filtering afterwards.
    scoped = (
        select(*RESULT_COLUMNS, Chunk.embedding)
        .where(Chunk.knowledge_base_id == bindparam("kb_id"), Chunk.embedding.is_not(None))
        .cte("scoped")
        .prefix_with("MATERIALIZED")
    )
    distance = scoped.c.embedding.cosine_distance(_QUERY_VECTOR).label("distance")
    return select(*_result_columns(scoped.c), distance).order_by(distance).limit(bindparam(limit))


def _indexed_nearest(limit: str = "top_k") -> Select[Any]:
    distance = Chunk.embedding.cosine_distance(_QUERY_VECTOR).label("distance")
    nearest = (
        select(*RESULT_COLUMNS, distance)
        .where(Chunk.knowledge_base_id == bindparam("kb_id"))
        .order_by(distance)
        .limit(bindparam(limit))
        .subquery()
    )
    # relaxed_order may return rows slightly out of order: sort the final few again.
    return select(nearest).order_by(nearest.c.distance)


def _all_words() -> ColumnElement[Any]:
    """The query as a search box reads it: every word, "phrases", -exclusions, `or`."""
    return func.websearch_to_tsquery(cast(bindparam("language"), REGCONFIG), bindparam("query"))


def _any_word() -> ColumnElement[Any]:
    """Any of the query's words (stemmed, stop words dropped): a question's words are not all
    in the passage that answers it. PostgreSQL's own text of the AND query, with OR instead
    (lexemes never hold spaces), read back as a tsquery."""
    plain = func.plainto_tsquery(cast(bindparam("language"), REGCONFIG), bindparam("query"))
    return cast(func.replace(cast(plain, Text), " & ", " | "), TSQUERY)


def _keyword(limit: str = "top_k", words: ColumnElement[Any] | None = None) -> Select[Any]:
    # The tsquery in a scalar subquery: computed once, and a constant the GIN index can use.
    tsquery = select(_all_words() if words is None else words).scalar_subquery()
    matching = (
        select(*RESULT_COLUMNS, Chunk.search_vector)
        .where(Chunk.knowledge_base_id == bindparam("kb_id"), Chunk.search_vector.op("@@")(tsquery))
        .limit(KEYWORD_SCAN_LIMIT)
        .subquery("matching")
    )
    score = func.ts_rank_cd(matching.c.search_vector, tsquery).label("score")
    return (
        select(*_result_columns(matching.c), score)
        .order_by(score.desc(), matching.c.id)
        .limit(bindparam(limit))
    )


def _hybrid(nearest: Select[Any]) -> Select[Any]:
    """Reciprocal rank fusion of `nearest` and the keyword ranking, each cut at `candidates`."""
    by_vector = nearest.subquery("by_vector")
    by_keyword = _keyword(limit="candidates", words=_any_word()).subquery("by_keyword")
    ranked = union_all(
        select(
            by_vector.c.id,
            func.row_number().over(order_by=by_vector.c.distance).label("rank"),
        ),
        select(
            by_keyword.c.id,
            func.row_number()
            .over(order_by=(by_keyword.c.score.desc(), by_keyword.c.id))
            .label("rank"),
        ),
    ).subquery("ranked")
    fused = (
        select(ranked.c.id, func.sum(1.0 / (RRF_K + ranked.c.rank)).label("score"))
        .group_by(ranked.c.id)
        .subquery("fused")
    )
    return (
        select(*RESULT_COLUMNS, fused.c.score)
        .join(fused, fused.c.id == Chunk.id)
        .order_by(fused.c.score.desc(), Chunk.id)
        .limit(bindparam("top_k"))
    )


# Reciprocal rank fusion's constant (Cormack et al.'s 60), and how deep each ranking is read.
RRF_K = 60
HYBRID_CANDIDATES = 50
# Chunks ranked by words at most: ranking reads each matching chunk's tsvector, and a common
# word matches most of a large knowledge base (measured on the bench's 6,408 chunks: 76-96 ms
# to rank 6,000 matches, 3-5 ms for 500, against 5-10 ms for the vector half). Past it, the
# ranking is of the first 500 matches found, not of all.
KEYWORD_SCAN_LIMIT = 500

# Built once with bind parameters: building these per request cost more CPU than running them.
_QUERY_VECTOR = query_vector("vector", EMBEDDING_DIM)
EXACT_NEAREST = _exact_nearest()
INDEXED_NEAREST = _indexed_nearest()
KEYWORD = _keyword()
EXACT_HYBRID = _hybrid(_exact_nearest(limit="candidates"))
INDEXED_HYBRID = _hybrid(_indexed_nearest(limit="candidates"))
_INDEX_SETTINGS = "knowledge_base.hnsw_settings"


async def use_index_settings(session: AsyncSession, settings: KnowledgeBaseSettings) -> None:
    """pgvector's HNSW search settings for the next query on this session's connection.

    In a read session (autocommit) they are set for the connection's lifetime, once: the pooled
    connection remembers them (`connection.info`), so a search costs no extra round trip. In a
    transaction they are set for that transaction only (a rollback would undo a lasting one).
    """
    wanted = (settings.search_iterative_scan, str(settings.search_ef_search))
    connection = await session.connection()
    options = (
        connection.sync_connection.get_execution_options() if connection.sync_connection else {}
    )
    lasting = options.get("isolation_level") == "AUTOCOMMIT"
    if lasting and connection.info.get(_INDEX_SETTINGS) == wanted:
        return
    await connection.execute(
        text(
            "SELECT set_config('hnsw.iterative_scan', :scan, :local), "
            "set_config('hnsw.ef_search', :ef, :local)"
        ),
        {"scan": wanted[0], "ef": wanted[1], "local": not lasting},
    )
    if lasting:
        connection.info[_INDEX_SETTINGS] = wanted


async def nearest_chunks(
    session: AsyncSession,
    *,
    kb: KnowledgeBase,
    vector: Sequence[float],
    top_k: int,
    settings: KnowledgeBaseSettings,
) -> Sequence[SearchResult]:
    """The search query itself: the `top_k` chunks of `kb` nearest `vector` (cosine)."""
    if uses_exact_search(kb, settings):
        statement = EXACT_NEAREST
    else:
        await use_index_settings(session, settings)
        statement = INDEXED_NEAREST
    parameters = {"kb_id": kb.id, "vector": vector, "top_k": top_k}
    rows = (await session.execute(statement, parameters)).all()
    # A zero vector (a remote model's answer for nothing) has no cosine: no similarity.
    return [_result(r, 0.0 if math.isnan(r.distance) else 1 - r.distance) for r in rows]
