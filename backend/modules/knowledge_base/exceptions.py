from __future__ import annotations

from fastapi import status

from backend.core.errors import AppError, NotFound, TooManyRequests, Unavailable


class KnowledgeBaseNotFound(NotFound):
    detail = "Knowledge base not found"


class DocumentNotFound(NotFound):
    detail = "Document not found"


class UnsupportedDocumentType(AppError):
    status_code = status.HTTP_415_UNSUPPORTED_MEDIA_TYPE

    def __init__(self, content_type: str) -> None:
        super().__init__(
            f"Cannot make a document from a {content_type} file: "
            f"PDF, DOCX, HTML, Markdown and plain text are supported"
        )


class EmptyDocument(AppError):
    status_code = status.HTTP_422_UNPROCESSABLE_CONTENT
    detail = "The document has no text"


class DocumentTooLarge(AppError):
    status_code = status.HTTP_413_CONTENT_TOO_LARGE

    def __init__(self, limit: int) -> None:
        super().__init__(f"The document is larger than the limit of {limit} bytes")


class SourceFileNotFound(AppError):
    """The body names a file the caller does not have: a bad field, not a missing URL (404)."""

    status_code = status.HTTP_422_UNPROCESSABLE_CONTENT
    detail = "file_id: you have no file with this id"


class EmbeddingModelChanged(Unavailable):
    """The vectors stored are of another dimension than this process's model makes: a model
    change is being rolled out (its revision ran before this replica was replaced)."""

    detail = (
        "The embedding model is being changed: the stored vectors are not this server's model's. "
        "Retry shortly"
    )
    retry_after = 5


class TooManySearches(TooManyRequests):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"You have {limit} searches running (SEARCH_CONCURRENCY_PER_USER): retry when one ends",
            retry_after=1,
        )


class SearchTimedOut(Unavailable):
    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"The search took longer than {seconds:g} s (SEARCH_TIMEOUT_SECONDS) and was stopped: "
            f"retry, or use fewer or rarer words"
        )


class DocumentLimitReached(AppError):
    """Per-user limits on what the knowledge bases hold."""

    status_code = status.HTTP_413_CONTENT_TOO_LARGE


class TooManyQueuedDocuments(TooManyRequests):
    def __init__(self, queued: int, limit: int) -> None:
        super().__init__(
            f"You have {queued} documents waiting to be processed; the limit is {limit} "
            f"(MAX_QUEUED_DOCUMENTS_PER_USER): add more when some are ready",
            retry_after=10,
        )


class ParserUnavailable(Unavailable):
    """No parser process could be started: the document is tried again later."""


class EmbeddingError(AppError):
    status_code = 502
    detail = "The embedding service failed"


class UnreadableDocument(AppError):
    status_code = status.HTTP_422_UNPROCESSABLE_CONTENT


class RerankError(AppError):
    status_code = 502
    detail = "The reranking service failed"
