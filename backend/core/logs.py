"""Logs an operator can use: one line per request, the request's id on every line of it, JSON
in production and readable text in development.

The request id (request_ids.py) is attached to every log line written while the request runs
(SQL errors, handlers' own lines). The request line itself is written by `RecordRequests`:
method, route template (`/api/v1/files/{file_id}`, never the ids or the query string, where
tokens would leak), status and duration.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any, Literal

from asgi_correlation_id import CorrelationIdFilter, correlation_id
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.core import metrics

LogFormat = Literal["json", "text"]
request_log = logging.getLogger("backend.request")
# Probes and scrapes every few seconds: counted in the metrics, not written to the log.
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


class RecordRequests:
    """Pure ASGI: for each HTTP request, once its response is sent (or it failed), one
    `backend.request` log line and the request metrics (backend/core/metrics.py), both with
    the route template instead of the path."""

    def __init__(self, app: ASGIApp, *, with_metrics: bool = True) -> None:
        self.app = app
        self.with_metrics = with_metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if nothing was sent

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            seconds = time.perf_counter() - started
            method, route = scope["method"], route_template(scope)
            if self.with_metrics:
                metrics.observe(method, route, status, seconds)
            if route not in QUIET_ROUTES and request_log.isEnabledFor(logging.INFO):
                milliseconds = round(seconds * 1000, 2)
                handler = _sole_json_handler()
                if handler is not None:
                    handler.request_line(method, route, status, milliseconds)
                else:
                    request_log.info(
                        "%s %s %s %.2fms",
                        method,
                        route,
                        status,
                        milliseconds,
                        extra={
                            "fields": {
                                "method": method,
                                "route": route,
                                "status": status,
                                "duration_ms": milliseconds,
                            }
                        },
                    )


def _sole_json_handler() -> BatchedStderr | None:
    """Our JSON handler, when it alone would receive `backend.request`'s lines: then a request
    line is written without the logging machinery (a LogRecord, filters, a lock), a third of
    its cost. Anything added to that path (a handler, a filter) turns this off."""
    handler = _installed
    if (
        handler is None
        or request_log.handlers
        or request_log.filters
        or not request_log.propagate
        or logging.root.handlers != [handler]
        or not isinstance(handler.formatter, JsonFormatter)
    ):
        return None
    return handler


def route_template(scope: Scope) -> str:
    """`/api/v1/files/{file_id}` for `/api/v1/files/5f0c...`: the path with each path parameter
    put back as its name. `<unmatched>` for a path no route matched (so a scanner's paths do
    not become log fields or metric labels)."""
    if scope.get("route") is None:
        return "<unmatched>"
    path: str = scope["path"]
    for name, value in scope.get("path_params", {}).items():
        path = path.replace(f"/{value}", f"/{{{name}}}", 1)
    return path


# One encoder for every line: `json.dumps(..., default=str)` would build a new one each time.
_encode = json.JSONEncoder(default=str).encode


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, the record's
    `fields` (`extra={"fields": {...}}`) and the exception, if any."""

    _second: int = -1
    _stamp: str = ""

    def timestamp(self, created: float) -> str:
        """ISO 8601 in UTC with milliseconds; the date and time part made once a second."""
        second = int(created)
        if second != self._second:
            self._second = second
            self._stamp = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._stamp}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "correlation_id", None),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _encode(entry)


TEXT_FORMAT = "%(asctime)s %(levelname)-7s [%(correlation_id)s] %(name)s: %(message)s"
_HANDLER_NAME = "backend"
_installed: BatchedStderr | None = None  # the handler configure_logging put on the root


class BatchedStderr(logging.Handler):
    """Lines to stderr. Request lines (`backend.request`, one per request) are written in
    batches: every `interval` seconds, at 64 kB, and with the next other line; every other line
    is written at once, with the batch before it (so nothing that explains a crash or a
    shutdown is held back: a SIGTERM ends uvicorn without running exit handlers).

    One write per request line cost half its price (a system call each, ~18 us on the bench
    machine); a batch pays it once. Lines go to whatever `sys.stderr` is when written (a test's
    capture included).
    """

    MAX_BYTES = 64 * 1024

    def __init__(self, interval: float = 0.2) -> None:
        super().__init__()
        self._lines: list[str] = []
        self._bytes = 0
        self._stopped = threading.Event()
        self._flusher = threading.Thread(
            target=self._flush_every, args=(interval,), name="log-flusher", daemon=True
        )
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._hold(line, record.name)

    def request_line(self, method: str, route: str, status: int, milliseconds: float) -> None:
        """The JSON line `request_log.info(...)` would write through this handler, made here."""
        formatter = self.formatter
        assert isinstance(formatter, JsonFormatter)
        entry = {
            "time": formatter.timestamp(time.time()),
            "level": "INFO",
            "logger": request_log.name,
            "message": f"{method} {route} {status} {milliseconds:.2f}ms",
            "request_id": correlation_id.get() or "-",
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": milliseconds,
        }
        with self.lock:  # type: ignore[union-attr]
            self._hold(_encode(entry), request_log.name)

    def _hold(self, line: str, logger: str) -> None:
        self._lines.append(line)
        self._bytes += len(line)
        if logger != request_log.name or self._bytes >= self.MAX_BYTES:
            self._write()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write()

    def close(self) -> None:
        self._stopped.set()
        self.flush()
        super().close()

    def _write(self) -> None:
        if not self._lines:
            return
        text = "\n".join(self._lines) + "\n"
        self._lines.clear()
        self._bytes = 0
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except (OSError, ValueError):  # stderr closed (a test's capture ended): nothing to do
            pass

    def _flush_every(self, interval: float) -> None:
        while not self._stopped.wait(interval):
            self.flush()


def flush_logs() -> None:
    """Write out what the log handler holds (the app's lifespan calls this as it ends)."""
    for handler in logging.getLogger().handlers:
        handler.flush()


def configure_logging(level: str, log_format: LogFormat) -> None:
    """Route every logger (the app's, SQLAlchemy's, uvicorn's, Alembic's) through one stderr
    handler that adds the request id. `level` is the app's own loggers' (`backend.*`); other
    libraries log their warnings and errors. Calling it again replaces that handler."""
    # Nothing here prints a record's thread, process or task: skip looking them up per line.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # Nor where in the source a line was logged (a stack walk per line; the logging HOWTO's
    # "Optimization" section).
    logging._srcfile = None
    handler = BatchedStderr()
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(CorrelationIdFilter(default_value="-"))
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    global _installed
    _installed = handler
    root.setLevel(logging.WARNING)
    logging.getLogger("backend").setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        # uvicorn set up its own handlers before importing the app: use ours instead.
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # The request line replaces uvicorn's access log (which has no route template or id).
    logging.getLogger("uvicorn.access").disabled = True
    # An unusable incoming id is replaced quietly: a client sending bad ones on purpose would
    # otherwise double the log volume (and the warning is written before the new id is set).
    logging.getLogger("asgi_correlation_id").setLevel(logging.ERROR)
