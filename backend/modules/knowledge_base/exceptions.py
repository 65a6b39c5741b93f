from __future__ import annotations

from fastapi import status

from backend.core.errors import AppError, NotFound


class KnowledgeBaseNotFound(NotFound):
    detail = "Knowledge base not found"


class DocumentNotFound(NotFound):
    detail = "Document not found"


class UnsupportedDocumentType(AppError):
    status_code = status.HTTP_415_UNSUPPORTED_MEDIA_TYPE

    def __init__(self, content_type: str) -> None:
        super().__init__(
            f"Cannot make a document from a {content_type} file: "
            f"only text/plain and text/markdown are supported"
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
