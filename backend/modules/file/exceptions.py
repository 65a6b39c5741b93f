from __future__ import annotations

from fastapi import status

from backend.core.errors import AppError, NotFound, Unavailable


class FileNotFound(NotFound):
    detail = "File not found"


class FileTooLarge(AppError):
    status_code = status.HTTP_413_CONTENT_TOO_LARGE

    def __init__(self, limit: int) -> None:
        super().__init__(f"File is larger than the limit of {limit} bytes")


class BadUpload(AppError):
    status_code = status.HTTP_400_BAD_REQUEST
    detail = "Expected a multipart/form-data body with one file in the field 'file'"


class QuotaExceeded(AppError):
    status_code = status.HTTP_413_CONTENT_TOO_LARGE
    detail = "This upload would exceed your storage quota"

    def __init__(self, quota: int, used: int) -> None:
        super().__init__(
            f"This upload would exceed your storage quota of {quota} bytes "
            f"({used} bytes used): delete files first"
        )


class StorageUnavailable(Unavailable):
    detail = "File storage failed; nothing was kept. Retry shortly."
