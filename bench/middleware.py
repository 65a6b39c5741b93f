"""What the request id, request line and metrics middlewares cost per request, in-process:
each chain driven directly with a trivial app behind it, CPU time per request (the best of
three rounds). Steadier than throughput ratios, which move by ±0.05 from server to server."""

from __future__ import annotations

import asyncio
import io
import sys
import time
from typing import Any

from backend.core.logs import RecordRequests, configure_logging, flush_logs
from backend.core.request_ids import RequestIds

ROUNDS, CALLS = 3, 20_000


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def _receive() -> dict[str, Any]:
    return {"type": "http.request"}


async def _send(message: Any) -> None:
    pass


SCOPE = {
    "type": "http",
    "method": "GET",
    "path": "/api/v1/users/me",
    "headers": [(b"host", b"x"), (b"authorization", b"Bearer token")],
    "route": object(),
    "path_params": {},
}


async def _per_request_us(app: Any, calls: int) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.process_time()
        for _ in range(calls):
            await app(dict(SCOPE), _receive, _send)
        best = min(best, (time.process_time() - started) / calls * 1e6)
    return best


def middleware_cost(calls: int = CALLS) -> dict[str, float]:
    """CPU microseconds per request of each middleware, JSON lines to a string as stderr."""
    chains = {
        "none": _app,
        "request ids": RequestIds(_app),
        "request ids + request line": RequestIds(RecordRequests(_app, with_metrics=False)),
        "request ids + request line + metrics": RequestIds(RecordRequests(_app)),
    }
    stderr = sys.stderr
    sys.stderr = io.StringIO()
    try:
        configure_logging("INFO", "json")
        figures = {name: asyncio.run(_per_request_us(app, calls)) for name, app in chains.items()}
        flush_logs()
    finally:
        sys.stderr = stderr
    bare = figures.pop("none")
    return {name: us - bare for name, us in figures.items()}
