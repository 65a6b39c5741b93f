"""The domain error hierarchy: what a service raises on purpose, and how a route declares the
errors it can answer (for OpenAPI). `handlers.py` turns every failure into a JSON response."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import status
from pydantic import BaseModel


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class AppError(Exception):
    """Base for errors a service raises on purpose; `status_code` is what the client gets.

    `code` is the stable, machine-readable name of the error (from the class name:
    `FileNotFound` is `file_not_found`); `detail` is the sentence for people, and may change.
    """

    status_code: int = status.HTTP_400_BAD_REQUEST
    detail: str = "Bad request"
    code: str = "bad_request"
    headers: dict[str, str] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" not in cls.__dict__:
            cls.code = _snake(cls.__name__)

    def __init__(self, detail: str | None = None) -> None:
        if detail is not None:
            self.detail = detail
        super().__init__(self.detail)


class NotFound(AppError):
    status_code = status.HTTP_404_NOT_FOUND
    detail = "Not found"


class Conflict(AppError):
    status_code = status.HTTP_409_CONFLICT
    detail = "Conflict"


class Unavailable(AppError):
    """A part the request needs is down or busy: the client retries after `Retry-After`."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    detail = "A part this request needs is down or busy; retry shortly"
    retry_after = 1

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(self.retry_after)}


class TooManyRequests(AppError):
    """The client is over a limit: it may retry after `Retry-After` seconds."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    detail = "Too many requests; retry later"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(retry_after)}


class StorageFull(AppError):
    status_code = status.HTTP_507_INSUFFICIENT_STORAGE
    detail = "The server has no space left to store this; nothing was kept"


class ErrorBody(BaseModel):
    """Every error response: a stable `code` for programs, a sentence for people in `detail`."""

    detail: str
    code: str


# Codes of the errors that do not come from an AppError.
HTTP_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    404: "not_found",
    405: "method_not_allowed",
    408: "body_stalled",
    413: "body_too_large",
    422: "validation_error",
}


E = TypeVar("E", bound=Callable[..., Any])


def raises(*errors: type[AppError]) -> Callable[[E], E]:
    """Declare the errors a dependency can raise; every route that uses it documents them."""

    def mark(dependency: E) -> E:
        dependency.__dict__["declared_errors"] = errors
        return dependency

    return mark


def error_responses(*errors: type[AppError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these errors, grouped by status."""
    responses: dict[int | str, dict[str, Any]] = {}
    for error in errors:
        entry = responses.setdefault(error.status_code, {"model": ErrorBody, "description": ""})
        described = entry["description"]
        entry["description"] = f"{described}; {error.detail}" if described else error.detail
    return responses
