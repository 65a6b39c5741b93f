"""The domain error hierarchy and the one handler that turns it into HTTP responses."""

from __future__ import annotations

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError


class AppError(Exception):
    """Base for errors a service raises on purpose; `status_code` is what the client gets."""

    status_code: int = status.HTTP_400_BAD_REQUEST
    detail: str = "Bad request"

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


async def _app_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)


async def _integrity_error_handler(request: Request, exc: Exception) -> JSONResponse:
    # A constraint the service did not check first (a race between two requests, usually).
    return JSONResponse(
        {"detail": "The request conflicts with existing data"},
        status_code=status.HTTP_409_CONFLICT,
    )


async def _validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """422 with one readable `detail` line, and the field-by-field list beside it."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    problems = []
    for error in errors[:5]:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        problems.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    return JSONResponse(
        {"detail": "; ".join(problems) or "Invalid request", "errors": jsonable_encoder(errors)},
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(IntegrityError, _integrity_error_handler)
