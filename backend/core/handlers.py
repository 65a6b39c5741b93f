"""The handlers that turn every failure into a JSON response with a stable `code`.

Whatever happens, a client gets JSON with `detail`: a domain error with its status, a
validation error as 422, an overloaded or unreachable database as 503 with `Retry-After`, a full
disk as 507, a client gone mid-body as 499 (nobody reads it), and anything unexpected as 500
(logged with its traceback).
"""

from __future__ import annotations

import logging
import math
import socket
from typing import Any

from asgi_correlation_id import correlation_id
from fastapi import FastAPI, Request, routing, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from backend.core.errors import HTTP_CODES, AppError
from backend.core.request_ids import REQUEST_ID_HEADER

logger = logging.getLogger("backend.errors")

# SQLSTATE 23505: the only integrity error that means "this already exists".
UNIQUE_VIOLATION = "23505"
# Internal: marks a response the retry middleware may replace by running the request again.
RETRYABLE_HEADER = "x-internal-retryable"


def _json(
    status_code: int, detail: str, code: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"detail": detail, "code": code}, status_code=status_code, headers=headers)


async def _app_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return _json(exc.status_code, exc.detail, exc.code, exc.headers)


def _finite(value: Any) -> Any:
    """JSON has no NaN or Infinity: echo such inputs back as text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, str):
        # A lone surrogate cannot be encoded back into the response.
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


async def _validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """422 with one readable `detail` line, and the field-by-field list beside it."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    problems = []
    for error in errors[:5]:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        problems.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    body = {
        "detail": _finite("; ".join(problems) or "Invalid request"),
        "code": "validation_error",
        "errors": _finite(jsonable_encoder(errors)),
    }
    return JSONResponse(body, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


async def _http_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED:
        # Starlette names only the first route that matched the path; the path may have several.
        allowed: set[str] = set()
        for route in routing.iter_route_contexts(request.app.routes):
            pattern = getattr(route, "path_regex", None)
            if pattern is not None and pattern.match(request.url.path):
                allowed |= route.methods or set()
        if "GET" in allowed:
            allowed.add("HEAD")
        headers["Allow"] = ", ".join(sorted(allowed))
    code = HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    return _json(exc.status_code, str(exc.detail), code, headers)


async def _integrity_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, IntegrityError)
    if getattr(exc.orig, "sqlstate", None) == UNIQUE_VIOLATION:
        # A uniqueness the service did not check first (a race between two requests, usually).
        return _json(
            status.HTTP_409_CONFLICT, "The request conflicts with existing data", "conflict"
        )
    return await _unexpected_error_handler(request, exc)


def _from_driver(exc: BaseException) -> bool:
    """Whether the database driver raised `exc` (a storage error is an OSError too)."""
    frame = exc.__traceback__
    while frame is not None:
        if frame.tb_frame.f_globals.get("__name__", "").startswith("asyncpg."):
            return True
        frame = frame.tb_next
    return False


def database_unreachable(exc: BaseException) -> bool:
    """The database is down, restarting or refused the connection (not a bad query)."""
    if isinstance(exc, OSError):
        # What asyncpg raises when it cannot connect at all; over a unix socket a stopped
        # server is a missing file (FileNotFoundError), so any OSError the driver raised counts.
        return isinstance(exc, ConnectionError | TimeoutError | socket.gaierror) or _from_driver(
            exc
        )
    if isinstance(exc, DBAPIError):
        code = str(getattr(exc.orig, "sqlstate", "") or "")
        return (
            exc.connection_invalidated
            or code.startswith("08")
            or code in ("57P01", "57P02", "57P03")
            or isinstance(exc.orig, OSError)
        )
    return False


async def _database_error_handler(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, PoolTimeout):
        return _json(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "The server is busy: no database connection was free in time. Retry shortly.",
            "pool_exhausted",
            {"Retry-After": "1"},
        )
    if database_unreachable(exc):
        logger.error("database unreachable: %s", exc)
        headers = {"Retry-After": "5"}
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            # A pooled connection the server dropped (a restart): the pool has discarded it
            # and its peers, so a read can safely run again (RetryReadsOnDisconnect).
            headers[RETRYABLE_HEADER] = "1"
        return _json(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "The database is unavailable. Retry shortly.",
            "database_unavailable",
            headers,
        )
    return await _unexpected_error_handler(request, exc)


# nginx's "client closed request": what the access log and the metrics say of a request whose
# client left before its body was read (nobody receives the response).
CLIENT_CLOSED_REQUEST = 499


async def _client_disconnect_handler(request: Request, exc: Exception) -> Response:
    """The client went away mid-body (a cancelled upload): not a server error, no traceback."""
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _json(status.HTTP_500_INTERNAL_SERVER_ERROR, "Internal server error", "internal_error")


async def _crash_handler(request: Request, exc: Exception) -> JSONResponse:
    """A crash, answered by Starlette's outermost middleware: outside the one that returns the
    request id, so the id is added here (the 500 an operator is asked about carries it)."""
    response = await _unexpected_error_handler(request, exc)
    request_id = correlation_id.get()
    if request_id:
        response.headers[REQUEST_ID_HEADER] = request_id
    return response


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_exception_handler)
    app.add_exception_handler(IntegrityError, _integrity_error_handler)
    app.add_exception_handler(DBAPIError, _database_error_handler)
    app.add_exception_handler(PoolTimeout, _database_error_handler)
    app.add_exception_handler(OSError, _database_error_handler)
    app.add_exception_handler(ClientDisconnect, _client_disconnect_handler)
    # Exception: Starlette's outermost middleware calls it, so even a crash is JSON.
    app.add_exception_handler(Exception, _crash_handler)
