"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.core.state import ReadinessChecks, app_state
from backend.db.migrations import head_revisions, known_revisions
from backend.db.session import database

router = APIRouter(tags=["health"])

# A probe that hangs is worse than one that fails: kubelet's own timeout is a few seconds.
READY_CHECK_TIMEOUT = 2.0


class Liveness(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    reason: str | None = None
    current: list[str] = []
    head: list[str] = []


@router.get("/healthz", response_model=Liveness, status_code=status.HTTP_200_OK)
async def healthz() -> Liveness:
    """Liveness: the process is up and serving. Touches no database."""
    return Liveness()


@router.get(
    "/readyz",
    response_model=Readiness,
    status_code=status.HTTP_200_OK,
    responses={503: {"model": Readiness, "description": "Database unreachable or behind head"}},
)
async def readyz(request: Request, response: Response) -> Readiness:
    """Readiness: the database answers, its schema is at this code's Alembic head, and what
    the modules check answers too (the file storage: its bucket or directory).

    A database *ahead* of this code (a newer release already migrated it during a rolling
    update) counts as ready, so the old replicas keep serving until the new ones are up.
    """
    head = list(head_revisions())
    try:
        current = await asyncio.wait_for(
            current_revisions(database(request).engine), READY_CHECK_TIMEOUT
        )
    except (TimeoutError, DBAPIError, OSError) as exc:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        reason = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
        return Readiness(status="not ready", reason=f"database unreachable ({reason})", head=head)

    readiness = assess(current, head, known_revisions())
    if readiness.status == "ready":
        failure = await _failed_check(app_state(request.app).get(ReadinessChecks))
        if failure is not None:
            readiness = Readiness(status="not ready", reason=failure, current=current, head=head)
    if readiness.status != "ready":
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return readiness


async def _failed_check(checks: ReadinessChecks) -> str | None:
    """The first module check that fails, as "<name>: <what is wrong>"."""
    for name, check in checks.items():
        try:
            await asyncio.wait_for(check(), READY_CHECK_TIMEOUT)
        except TimeoutError:
            return f"{name}: no answer within {READY_CHECK_TIMEOUT:g} s"
        except Exception as exc:
            return f"{name}: {exc}"
    return None


def assess(current: list[str] | None, head: list[str], known: frozenset[str]) -> Readiness:
    """Compare the database's revisions (None: never migrated) with this code's heads."""
    if current is None:
        return Readiness(
            status="not ready",
            reason="database has no alembic_version table: run `alembic upgrade head`",
            head=head,
        )
    if set(current) == set(head):
        return Readiness(status="ready", current=current, head=head)
    if set(current) - known:
        return Readiness(
            status="ready",
            reason="database is ahead of this code (a newer release migrated it)",
            current=current,
            head=head,
        )
    if len(head) > 1:
        # `upgrade head` refuses two heads: the fix is in the code, not in the database.
        reason = (
            f"this code has {len(head)} migration heads ({', '.join(head)}): run "
            f"`alembic merge heads`, commit the merge revision, then `alembic upgrade head`"
        )
    else:
        reason = "database schema is behind head: run `alembic upgrade head`"
    return Readiness(status="not ready", reason=reason, current=current, head=head)


async def current_revisions(engine: AsyncEngine) -> list[str] | None:
    async with engine.connect() as connection:
        try:
            result = await connection.execute(text("SELECT version_num FROM alembic_version"))
        except ProgrammingError:
            return None
        return sorted(result.scalars())
