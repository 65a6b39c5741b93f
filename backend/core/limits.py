"""Refuse request bodies above a size, before and while they are read."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodySizeLimit:
    """413 for bodies over `max_bytes`, by Content-Length or by counting a chunked stream.

    Routes that stream and limit their own bodies (uploads) are listed in `exempt` as
    (method, path).
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, exempt: set[tuple[str, str]]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) in self.exempt:
            await self.app(scope, receive, send)
            return
        too_large = HTTPException(413, f"Request body is larger than {self.max_bytes} bytes")
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await _send_413(send, too_large.detail)
                return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the app, so FastAPI turns it into the usual JSON 413.
                    raise too_large
            return message

        await self.app(scope, counting_receive, send)


async def _send_413(send: Send, detail: str) -> None:
    body = ('{"detail":"' + detail + '"}').encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
