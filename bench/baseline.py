"""The raw baseline: a bare Starlette app on an asyncpg pool, doing what the API does.

Same token check (PyJWT, HS256, the user row must exist and be active), the same SQL the API
issues for each endpoint, the same embedder for search, orjson responses. It is what the
template's endpoints are measured against: the cost of the database and the machine, with no
framework, ORM or validation in between. Each module's endpoints come from its bench part
(bench/modules/<name>/).

    DATABASE_URL=... JWT_SECRET=... uvicorn bench.baseline:app --no-access-log
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from pgvector.asyncpg import register_vector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backend.core.config import normalise_database_url
from bench.modules import mounted
from bench.raw import UNAUTHORISED, Pool, json, user_for

USER_FIELDS = ("id", "email", "username", "is_active", "is_superuser", "created_at")


async def me(request: Request) -> Response:
    async with Pool.pool.acquire() as connection:
        user = await user_for(request, connection)
        if user is None:
            return UNAUTHORISED
        return json({k: user[k] for k in USER_FIELDS})


async def healthz(request: Request) -> Response:
    return json({"status": "ok"})


async def init_connection(connection: asyncpg.Connection) -> None:
    await register_vector(connection)
    await connection.execute("SET hnsw.iterative_scan = relaxed_order; SET hnsw.ef_search = 100")


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    url = normalise_database_url(os.environ["DATABASE_URL"]).set(drivername="postgresql")
    size = int(os.environ.get("DB_POOL_SIZE", "10"))
    Pool.pool = await asyncpg.create_pool(
        url.render_as_string(hide_password=False),
        min_size=size,
        max_size=size,
        init=init_connection,
    )
    yield
    await Pool.pool.close()


app = Starlette(
    routes=[
        Route("/api/v1/users/me", me),
        *(route for part in mounted().values() for route in part.baseline_routes()),
        Route("/healthz", healthz),
    ],
    lifespan=lifespan,
)
