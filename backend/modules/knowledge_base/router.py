from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, Response, status

from backend.core.errors import AppError, error_responses
from backend.core.pagination import PageDep
from backend.db.session import ReadSessionDep, SessionDep
from backend.modules.knowledge_base import search as searching
from backend.modules.knowledge_base import service
from backend.modules.knowledge_base.dependencies import (
    EmbedderDep,
    OwnedKnowledgeBase,
    OwnedKnowledgeBaseForUpdate,
    RerankerDep,
    lifespan,
)
from backend.modules.knowledge_base.exceptions import (
    DocumentLimitReached,
    DocumentNotFound,
    DocumentTooLarge,
    EmbeddingError,
    RerankError,
    SearchTimedOut,
    SourceFileNotFound,
    TooManyQueuedDocuments,
    TooManySearches,
    UnsupportedDocumentType,
)
from backend.modules.knowledge_base.schemas import (
    DocumentBatchCreate,
    DocumentBatchItem,
    DocumentBatchRead,
    DocumentCreate,
    DocumentPage,
    DocumentRead,
    KnowledgeBaseCreate,
    KnowledgeBasePage,
    KnowledgeBaseRead,
    KnowledgeBaseUpdate,
    SearchQuery,
    SearchResults,
)
from backend.modules.knowledge_base.settings import KnowledgeBaseSettingsDep
from backend.modules.user.dependencies import CurrentUser

router = APIRouter(prefix="/knowledge-bases", tags=["knowledge bases"], lifespan=lifespan)


@router.post("", response_model=KnowledgeBaseRead, status_code=status.HTTP_201_CREATED)
async def create(
    request: Request,
    response: Response,
    session: SessionDep,
    user: CurrentUser,
    data: KnowledgeBaseCreate,
) -> KnowledgeBaseRead:
    """Create an empty knowledge base; `Location` names it."""
    kb = await service.create(session, owner=user, data=data)
    response.headers["Location"] = str(request.url_for("get_knowledge_base", kb_id=kb.id).path)
    return KnowledgeBaseRead.model_validate(kb)


@router.get("", response_model=KnowledgeBasePage, status_code=status.HTTP_200_OK)
async def list_knowledge_bases(
    session: ReadSessionDep, user: CurrentUser, page: PageDep
) -> KnowledgeBasePage:
    """The caller's knowledge bases, oldest first, a page at a time."""
    return KnowledgeBasePage.of(await service.list(session, owner=user, page=page), page)


@router.get("/{kb_id}", response_model=KnowledgeBaseRead, status_code=status.HTTP_200_OK)
async def get_knowledge_base(kb: OwnedKnowledgeBase) -> KnowledgeBaseRead:
    """One knowledge base."""
    return KnowledgeBaseRead.model_validate(kb)


@router.patch("/{kb_id}", response_model=KnowledgeBaseRead, status_code=status.HTTP_200_OK)
async def update(
    session: SessionDep, kb: OwnedKnowledgeBaseForUpdate, data: KnowledgeBaseUpdate
) -> KnowledgeBaseRead:
    """Rename it or change its description."""
    return KnowledgeBaseRead.model_validate(await service.update(session, kb=kb, data=data))


@router.delete("/{kb_id}", status_code=status.HTTP_204_NO_CONTENT, response_model=None)
async def delete(session: SessionDep, kb: OwnedKnowledgeBaseForUpdate) -> None:
    """Delete it with all its documents and chunks."""
    await service.delete(session, kb=kb)


# What adding a document can answer instead of 202 (one alone, or a batch none of which was
# queued).
DOCUMENT_ERRORS = error_responses(
    SourceFileNotFound,
    UnsupportedDocumentType,
    DocumentTooLarge,
    DocumentLimitReached,
    TooManyQueuedDocuments,
)


@router.post(
    "/{kb_id}/documents",
    response_model=DocumentRead,
    status_code=status.HTTP_202_ACCEPTED,
    responses=DOCUMENT_ERRORS,
)
async def add_document(
    request: Request,
    response: Response,
    settings: KnowledgeBaseSettingsDep,
    session: SessionDep,
    user: CurrentUser,
    kb: OwnedKnowledgeBaseForUpdate,
    data: DocumentCreate,
) -> DocumentRead:
    """Queue a document from `{title, text}` (read as Markdown) or an uploaded `{file_id}` (PDF,
    DOCX, HTML, Markdown, plain text). It is `pending` until a worker has chunked and embedded
    it (`ready`) or could not (`failed`, with `error`); `Location` is where to look."""
    document = await service.create_document(
        session, owner=user, kb=kb, data=data, settings=settings
    )
    location = request.url_for("get_document", kb_id=kb.id, doc_id=document.id)
    response.headers["Location"] = str(location.path)
    return DocumentRead.model_validate(document)


@router.post(
    "/{kb_id}/document-batches",
    response_model=DocumentBatchRead,
    status_code=status.HTTP_202_ACCEPTED,
    responses=DOCUMENT_ERRORS,
)
async def add_documents(
    settings: KnowledgeBaseSettingsDep,
    session: SessionDep,
    user: CurrentUser,
    kb: OwnedKnowledgeBaseForUpdate,
    data: DocumentBatchCreate,
) -> DocumentBatchRead:
    """Queue up to 1,000 documents in one request (each as `POST .../documents` takes it; the
    body is bounded by MAX_REQUEST_BYTES): each is answered in order, `pending` with its id, or
    `refused` with the `code` and `detail` it would have had alone. Past the owner's limits
    partway, the rest are refused; when none could be queued, the answer is the first one's
    error (413, 415, 422, or 429 with Retry-After). Short text bodies queued together are also
    processed together."""
    created = await service.create_documents(
        session, owner=user, kb=kb, items=data.documents, settings=settings
    )
    if all(isinstance(item, AppError) for item in created):
        raise next(item for item in created if isinstance(item, AppError))
    return DocumentBatchRead(
        documents=[
            DocumentBatchItem(id=None, status="refused", code=item.code, detail=item.detail)
            if isinstance(item, AppError)
            else DocumentBatchItem(id=item.id, status="pending")
            for item in created
        ]
    )


@router.get(
    "/{kb_id}/documents/{doc_id}",
    response_model=DocumentRead,
    status_code=status.HTTP_200_OK,
    responses=error_responses(DocumentNotFound),
)
async def get_document(
    session: ReadSessionDep, kb: OwnedKnowledgeBase, doc_id: uuid.UUID
) -> DocumentRead:
    """One document, with its ingestion status."""
    return DocumentRead.model_validate(await service.get_document(session, kb=kb, doc_id=doc_id))


@router.get("/{kb_id}/documents", response_model=DocumentPage, status_code=status.HTTP_200_OK)
async def list_documents(
    session: ReadSessionDep, kb: OwnedKnowledgeBase, page: PageDep
) -> DocumentPage:
    """The knowledge base's documents, oldest first, a page at a time."""
    return DocumentPage.of(await service.list_documents(session, kb=kb, page=page), page)


@router.delete(
    "/{kb_id}/documents/{doc_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_model=None,
    responses=error_responses(DocumentNotFound),
)
async def delete_document(
    session: SessionDep, kb: OwnedKnowledgeBaseForUpdate, doc_id: uuid.UUID
) -> None:
    """Delete a document and its chunks."""
    await service.delete_document(session, kb=kb, doc_id=doc_id)


@router.post(
    "/{kb_id}/search",
    response_model=SearchResults,
    status_code=status.HTTP_200_OK,
    responses=error_responses(EmbeddingError, RerankError, TooManySearches, SearchTimedOut),
)
async def search(
    settings: KnowledgeBaseSettingsDep,
    session: ReadSessionDep,
    kb: OwnedKnowledgeBase,
    data: SearchQuery,
    embedder: EmbedderDep,
    reranker: RerankerDep,
) -> SearchResults:
    """The `top_k` chunks of this knowledge base that best answer the query, best first:
    `hybrid` (default) sums meaning (vectors) and words (BM25), each ranking's scores scaled
    to 0..1 and weighted; `vector` and `keyword` use one alone."""
    results = await searching.search(
        session,
        kb=kb,
        query=data.query,
        top_k=data.top_k,
        mode=data.mode,
        embedder=embedder,
        reranker=reranker,
        settings=settings,
    )
    return SearchResults(results=results)
