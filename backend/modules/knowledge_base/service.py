from __future__ import annotations

import builtins
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import (
    bindparam,
    select,
    text,
)
from sqlalchemy import update as sql_update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from backend.core.errors import AppError
from backend.core.pagination import PageParams, paged
from backend.modules.file import service as file_service
from backend.modules.file.exceptions import FileNotFound
from backend.modules.knowledge_base.chunking import split_text
from backend.modules.knowledge_base.exceptions import (
    DocumentLimitReached,
    DocumentNotFound,
    DocumentTooLarge,
    KnowledgeBaseNotFound,
    SourceFileNotFound,
    TooManyQueuedDocuments,
    UnsupportedDocumentType,
)
from backend.modules.knowledge_base.models import Document, KnowledgeBase
from backend.modules.knowledge_base.parsing import Section, kind_of
from backend.modules.knowledge_base.schemas import (
    DocumentCreate,
    KnowledgeBaseCreate,
    KnowledgeBaseUpdate,
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
    [created] = await create_documents(session, owner=owner, kb=kb, items=[data], settings=settings)
    if isinstance(created, AppError):
        raise created
    return created


async def create_documents(
    session: AsyncSession,
    *,
    owner: User,
    kb: KnowledgeBase,
    items: Sequence[DocumentCreate],
    settings: KnowledgeBaseSettings,
) -> Sequence[Document | AppError]:
    """Queue each document as `create_document` does, in order: each one queued, or the
    reason it was refused (its file, its size, or the owner's limits, reached partway)."""
    room, full = await _room(session, owner=owner, settings=settings)
    created: builtins.list[Document | AppError] = []
    added = 0
    for data in items:
        try:
            if added == room:
                raise full(added)
            document = await _new_document(
                session, owner=owner, kb=kb, data=data, settings=settings
            )
        except AppError as exc:
            created.append(exc)
            continue
        session.add(document)
        created.append(document)
        added += 1
    await session.flush()
    return created


async def _new_document(
    session: AsyncSession,
    *,
    owner: User,
    kb: KnowledgeBase,
    data: DocumentCreate,
    settings: KnowledgeBaseSettings,
) -> Document:
    if data.file_id is not None:
        filename = await _check_file(session, owner=owner, file_id=data.file_id, settings=settings)
        title = data.title or filename
    else:
        assert data.text is not None
        assert data.title is not None
        if len(data.text.encode()) > settings.max_document_bytes:
            raise DocumentTooLarge(settings.max_document_bytes)
        title = data.title
    return Document(
        knowledge_base_id=kb.id,
        title=title,
        source_file_id=data.file_id,
        pending_text=data.text,
        status="pending",
        chunk_count=0,
        # A text body's length until it is processed (ingestion batches short ones).
        char_count=0 if data.text is None else len(data.text),
    )


async def _room(
    session: AsyncSession, *, owner: User, settings: KnowledgeBaseSettings
) -> tuple[int, Callable[[int], AppError]]:
    """How many more documents the owner may add now, and the refusal past that (given how
    many this request added). Counted in PostgreSQL, under a lock per owner until the request
    commits, so concurrent requests on any replica count each other."""
    await session.execute(LOCK_OWNER_DOCUMENTS, {"key": f"documents:{owner.id}"})
    held = (await session.execute(OWNER_DOCUMENTS, {"owner_id": owner.id})).one()
    if held.chunks >= settings.max_chunks_per_user:
        return 0, lambda added: DocumentLimitReached(
            f"Your documents hold {held.chunks} chunks; the limit is "
            f"{settings.max_chunks_per_user} (MAX_CHUNKS_PER_USER)"
        )
    documents = settings.max_documents_per_user - held.documents
    queued = settings.max_queued_documents_per_user - held.queued
    if documents <= queued:
        return max(documents, 0), lambda added: DocumentLimitReached(
            f"You have {held.documents + added} documents; the limit is "
            f"{settings.max_documents_per_user} (MAX_DOCUMENTS_PER_USER)"
        )
    return max(queued, 0), lambda added: TooManyQueuedDocuments(
        held.queued + added, settings.max_queued_documents_per_user
    )


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
