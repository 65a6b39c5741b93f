"""`python -m backend.worker`: the modules' background work as its own process (production: a
second Deployment of the same image, `BACKGROUND_IN_PROCESS=false` on the API's).

It starts every module as the API does (their lifespans: the database, the storage, the
embedder) with `BACKGROUND_IN_PROCESS=true`, so each module starts its background work here
(ingestion, the orphan-blob cleanup), and serves probes on WORKER_HOST:WORKER_PORT
(127.0.0.1:8001; the Kubernetes manifest listens on 0.0.0.0): `/healthz` fails when a
background loop has stopped turning, `/readyz` is the API's (the database answers, at this
code's revision, and what the modules check). SIGTERM stops the loops; ingestion hands the
documents in flight back (`pending`) for another worker.
"""

from __future__ import annotations

import os
import sys
import time

import uvicorn
from fastapi import APIRouter, FastAPI, Request, Response, status
from pydantic import BaseModel

from backend import health
from backend.core import http
from backend.core.app import app_or_exit, new_app
from backend.core.config import Settings
from backend.core.state import BackgroundLoops, app_state
from backend.db.session import database_lifespan
from backend.main import module_routers


class LoopHealth(BaseModel):
    processed: int
    seconds_since_turn: float


class WorkerHealth(BaseModel):
    status: str
    loops: dict[str, LoopHealth]


def create_worker_app() -> FastAPI:
    """Every module's start-up and shutdown, and two probes; no API."""
    routers = module_routers()
    app = new_app([Settings(background_in_process=True)], lifespan=database_lifespan)
    for module in routers:
        app.include_router(APIRouter(lifespan=module.lifespan_context))

    @app.get("/healthz", response_model=WorkerHealth)
    async def healthz(request: Request, response: Response) -> WorkerHealth:
        now = time.monotonic()
        loops = app_state(request.app).get(BackgroundLoops)
        stuck = [name for name, loop in loops.items() if now - loop.last_turn > loop.stuck_after]
        if stuck:
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return WorkerHealth(
            status=f"stuck: {', '.join(stuck)}" if stuck else "ok",
            loops={
                name: LoopHealth(processed=loop.processed, seconds_since_turn=now - loop.last_turn)
                for name, loop in loops.items()
            },
        )

    app.add_api_route("/readyz", health.readyz, response_model=health.Readiness)
    return app


def worker_app() -> FastAPI:
    """For uvicorn, which builds it after setting up its logging (as for the API)."""
    return app_or_exit(create_worker_app)


def main() -> int:
    host = os.environ.get("WORKER_HOST", "127.0.0.1")
    port = int(os.environ.get("WORKER_PORT", "8001"))
    config = uvicorn.Config(
        "backend.worker:worker_app",
        factory=True,
        host=host,
        port=port,
        access_log=False,
        http=http.PROTOCOL,
    )
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
