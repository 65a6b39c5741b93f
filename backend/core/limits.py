"""Guard request bodies: refuse them above a size, and cut them off when they stall."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.core.handlers import RETRYABLE_HEADER


class BodyStalled(HTTPException):
    def __init__(self, idle: float) -> None:
        super().__init__(408, f"The request body stalled: no data for {idle:g} seconds")


@dataclass
class _BodyBudget:
    max_bytes: int
    started: bool = False


_BUDGET = "backend.body_budget"


def set_body_limit(request: Request, max_bytes: int) -> None:
    """Let this request's body be up to `max_bytes` instead of MAX_REQUEST_BYTES.

    For a route that reads its body itself as a stream (an upload): call it from a dependency
    of the route, before the first read. A route with body parameters cannot (FastAPI reads
    those before any dependency runs), and calling it after the body was read is an error.
    """
    budget: _BodyBudget | None = request.scope.get(_BUDGET)
    if budget is None:  # an app without BodySizeLimit
        return
    if budget.started:
        raise RuntimeError("set_body_limit() after the request body was read")
    budget.max_bytes = max_bytes


class BodySizeLimit:
    """413 for bodies over the limit, by Content-Length or by counting a chunked stream; 408
    for a body that sends nothing for `idle_timeout` seconds (a slow client holds a worker's
    attention, and possibly a database connection, only that long).

    The limit is `max_bytes` unless the route sets its own (`set_body_limit`). Both checks run
    when the body is first read, after routing, so the route's own limit is the one applied.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, idle_timeout: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.idle_timeout = idle_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        budget = _BodyBudget(self.max_bytes)
        scope[_BUDGET] = budget
        declared = next(
            (
                int(value)
                for name, value in scope["headers"]
                if name == b"content-length" and value.isdigit()
            ),
            0,
        )
        received = 0
        body_done = False
        idle = self.idle_timeout

        async def guarded_receive() -> Message:
            nonlocal received, body_done
            if body_done:
                # Only the body has an idle limit. Later receives wait for the client to hang up
                # (a streamed download listens for that) for as long as the response takes.
                return await receive()
            if not budget.started:
                budget.started = True
                if declared > budget.max_bytes:
                    raise _too_large(budget.max_bytes)
            try:
                async with asyncio.timeout(idle):
                    message = await receive()
            except TimeoutError:
                # Raised inside the app, so FastAPI turns it into the usual JSON response.
                raise BodyStalled(idle) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > budget.max_bytes:
                    raise _too_large(budget.max_bytes)
            return message

        await self.app(scope, guarded_receive, send)


def _too_large(max_bytes: int) -> HTTPException:
    return HTTPException(413, f"Request body is larger than {max_bytes} bytes")


class HeadAsGet:
    """`HEAD` answers wherever `GET` does: the GET route runs, and its body is not sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


class RetryReadsOnDisconnect:
    """Run a GET again, once, when it failed on a pooled connection the database had dropped.

    After a database restart every pooled connection is dead. Pinging each on checkout
    (DB_POOL_PRE_PING) costs a round trip on every request for an event that is rare; without it,
    the first request on each dead connection would fail. SQLAlchemy discards the whole pool on
    the first such error, so one retry of a read (safe: it changes nothing) gets a fresh one.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        retry = False

        async def first_send(message: Message) -> None:
            nonlocal retry
            if message["type"] == "http.response.start":
                names = {name for name, _ in message.get("headers", [])}
                retry = RETRYABLE_HEADER.encode() in names
            if not retry:
                await send(message)

        await self.app(scope, receive, first_send)
        if retry:

            async def strip_marker(message: Message) -> None:
                if message["type"] == "http.response.start":
                    headers = [(n, v) for n, v in message.get("headers", []) if n != marker]
                    message = {**message, "headers": headers}
                await send(message)

            marker = RETRYABLE_HEADER.encode()
            await self.app(scope, receive, strip_marker)
