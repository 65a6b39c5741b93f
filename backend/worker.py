"""`python -m backend.worker`: the ingestion worker as its own process (production: a second
Deployment of the same image, `BACKGROUND_IN_PROCESS=false` on the API's).

It starts what ingestion needs (the database, the file storage, the embedder) as the API does,
runs INGESTION_CONCURRENCY documents at a time, and serves its probes on WORKER_HOST:WORKER_PORT
(127.0.0.1:8001; the Kubernetes manifest listens on 0.0.0.0):
`/healthz` fails when the worker's loop has stopped turning, `/readyz` is the API's (the
database answers, at this code's revision). SIGTERM stops claiming; documents in flight are
handed back (`pending`) for another worker.
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
from backend.core.state import app_state
from backend.db.session import database_lifespan
from backend.modules.file import router as file
from backend.modules.knowledge_base import router as knowledge_base
from backend.modules.knowledge_base.ingestion import Worker


class WorkerHealth(BaseModel):
    status: str
    processed: int
    seconds_since_loop: float


def create_worker_app() -> FastAPI:
    """The modules' start-up (storage, embedder, the worker itself) and two probes; no API."""
    app = new_app([Settings(background_in_process=True)], lifespan=database_lifespan)
    for module in (file.router, knowledge_base.router):
        app.include_router(APIRouter(lifespan=module.lifespan_context))

    @app.get("/healthz", response_model=WorkerHealth)
    async def healthz(request: Request, response: Response) -> WorkerHealth:
        worker = app_state(request.app).get(Worker)
        idle = time.monotonic() - worker.last_loop
        stuck = idle > max(30.0, 10 * worker.poll)
        if stuck:
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return WorkerHealth(
            status="stuck" if stuck else "ok", processed=worker.processed, seconds_since_loop=idle
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
