"""`GET /metrics`: Prometheus text with the request metrics (backend/core/metrics.py), the
database pool's connections in use, idle and waiting, and the schema revision against head."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Gauge, generate_latest
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import QueuePool

from backend.db.migrations import head_revisions
from backend.db.session import database
from backend.health import READY_CHECK_TIMEOUT, current_revisions

router = APIRouter(tags=["health"])

POOL = Gauge("db_pool_connections", "Database pool connections by state.", ["state"])
SCHEMA = Gauge(
    "db_schema_revision_info",
    "The database's Alembic revision and this code's head (value 1).",
    ["current", "head"],
)
AT_HEAD = Gauge(
    "db_schema_at_head", "1 when the database's Alembic revision is this code's head, else 0."
)


def pool_waiting(pool: QueuePool) -> int:
    """Requests waiting for a connection: the asyncio queue's waiting getters (SQLAlchemy
    exposes no count of its own; tests/core/test_metrics.py checks this one)."""
    queue = getattr(getattr(pool, "_pool", None), "_queue", None)
    return len(getattr(queue, "_getters", ()))


@router.get("/metrics", response_class=Response, include_in_schema=False)
async def metrics(request: Request) -> Response:
    """The process's metrics in Prometheus's text format."""
    engine = database(request).engine
    pool = engine.pool
    if isinstance(pool, QueuePool):
        POOL.labels("in_use").set(pool.checkedout())
        POOL.labels("idle").set(pool.checkedin())
        POOL.labels("waiting").set(pool_waiting(pool))
    head = ",".join(sorted(head_revisions()))
    try:
        found = await asyncio.wait_for(current_revisions(engine), READY_CHECK_TIMEOUT)
        current = ",".join(sorted(found or []))
    except (TimeoutError, DBAPIError, OSError):
        current = "unknown"
    SCHEMA.clear()
    SCHEMA.labels(current, head).set(1)
    AT_HEAD.set(1 if current == head else 0)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
