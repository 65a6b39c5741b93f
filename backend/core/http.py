"""uvicorn's HTTP protocol with the request head bounded in size and in time.

uvicorn's default (httptools) reads a request's headers for as long and as far as a client
sends them: six connections each trickling an unfinished 64 MB header took the API from 199 MB
to 664 MB, and an unfinished header never timed out. This protocol answers 431 once a request's
head (request line and headers) passes HTTP_MAX_HEADER_BYTES, and 408 when it has not arrived
within HTTP_HEADER_TIMEOUT seconds of its first byte (or of the connection). Everything else is
uvicorn's. Every shipped way to serve selects it: `--http backend.core.http:BoundedHttpProtocol`
(the image sets UVICORN_HTTP, which uvicorn reads for that option).
"""

from __future__ import annotations

import asyncio
import os

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# nginx allows 4 x 8 KiB header lines by default; a bearer token is well under 1 KiB.
MAX_HEADER_BYTES = int(os.environ.get("HTTP_MAX_HEADER_BYTES", 32 * 1024))
HEADER_TIMEOUT = float(os.environ.get("HTTP_HEADER_TIMEOUT", 10.0))
# What `--http` (or UVICORN_HTTP) names.
PROTOCOL = "backend.core.http:BoundedHttpProtocol"


class BoundedHttpProtocol(HttpToolsProtocol):
    _head_bytes = 0
    _in_head = True
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_timer()  # a connection that never sends a byte is timed out too

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)  # the head may complete in this chunk (on_headers_complete)
        if self._in_head and self._head_bytes > MAX_HEADER_BYTES:
            self._refuse(b"431 Request Header Fields Too Large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._start_timer()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._stop_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            # The next request's head counts from here; uvicorn's keep-alive timeout closes the
            # connection if it does not start, this protocol's timer once it has started.
            self._head_bytes = 0
            self._in_head = True

    def _start_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(HEADER_TIMEOUT, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head:
            self._refuse(b"408 Request Timeout")

    def _stop_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse(self, status: bytes) -> None:
        self._stop_timer()
        self._in_head = False
        if not self.transport.is_closing():
            self.transport.write(
                b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            self.transport.close()
