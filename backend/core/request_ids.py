"""The request id: `X-Request-ID` when a client or the ingress sends a usable one, a new one
otherwise; returned in the response's `X-Request-ID` and kept, for the request's log lines, in a
context variable that asgi-correlation-id holds."""

from __future__ import annotations

import random
import re

from asgi_correlation_id import CorrelationIdMiddleware
from starlette.types import ASGIApp

REQUEST_ID_HEADER = "X-Request-ID"

# An incoming id is kept if it is short and plain (a UUID, nginx's 32 hex digits, a trace id);
# anything else (too long, spaces, control characters that would forge log lines) is replaced.
_USABLE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def usable_request_id(value: str) -> bool:
    return _USABLE_ID.fullmatch(value) is not None


def new_request_id() -> str:
    """32 hex digits, like a UUID's. Unique, not secret: no system call for randomness."""
    return f"{random.getrandbits(128):032x}"


class RequestIds(CorrelationIdMiddleware):
    """Pure ASGI: reads the request id (or makes one), keeps it in asgi-correlation-id's context
    variable for the request's log lines, and returns it in the response."""

    def __init__(self, app: ASGIApp) -> None:
        super().__init__(
            app,
            header_name=REQUEST_ID_HEADER,
            generator=new_request_id,
            validator=usable_request_id,
        )
