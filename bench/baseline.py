"""The raw baseline: a bare Starlette app on an asyncpg pool, doing what the API does.

Same token check (PyJWT, HS256, the user row must exist and be active), the same SQL the API
issues for each endpoint, the same embedder for search, orjson responses. It is what the
template's endpoints are measured against: the cost of the database and the machine, with no
framework, ORM or validation in between.

    DATABASE_URL=... JWT_SECRET=... uvicorn bench.baseline:app --no-access-log
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import jwt
import orjson
from pgvector.asyncpg import register_vector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backend.core.config import normalise_database_url
from backend.modules.knowledge_base.embeddings import create_embedder
from backend.modules.knowledge_base.settings import KnowledgeBaseSettings

USER = "SELECT * FROM users WHERE id = $1"
FILES = (
    "SELECT * FROM files WHERE owner_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
)
KB = "SELECT * FROM knowledge_bases WHERE id = $1 AND owner_id = $2"
SEARCH = (
    "WITH scoped AS MATERIALIZED (SELECT id, document_id, text, embedding FROM chunks "
    "WHERE knowledge_base_id = $1) "
    "SELECT id, document_id, text, embedding <=> $2 AS distance FROM scoped "
    "ORDER BY distance LIMIT $3"
)
# Above EXACT_MAX_CHUNKS, as the app does: the HNSW index, with pgvector's settings set once per
# connection (init_connection).
INDEXED_SEARCH = (
    "SELECT * FROM (SELECT id, document_id, text, embedding <=> $2 AS distance FROM chunks "
    "WHERE knowledge_base_id = $1 ORDER BY distance LIMIT $3) AS nearest ORDER BY distance"
)
EXACT_MAX_CHUNKS = int(os.environ.get("SEARCH_EXACT_MAX_CHUNKS", "10000"))
FILE_FIELDS = ("id", "filename", "content_type", "size", "sha256", "created_at")
USER_FIELDS = ("id", "email", "username", "is_active", "is_superuser", "created_at")


def json(body: Any, status: int = 200) -> Response:
    # default=str: asyncpg returns its own UUID type, which orjson does not know.
    return Response(
        orjson.dumps(body, default=str), status_code=status, media_type="application/json"
    )


UNAUTHORISED = json({"detail": "Not authenticated"}, 401)


async def user_for(request: Request, connection: asyncpg.Connection) -> asyncpg.Record | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    try:
        claims = jwt.decode(token, KEY, algorithms=["HS256"], options={"require": ["exp", "sub"]})
        user_id = uuid.UUID(claims["sub"])
    except (jwt.PyJWTError, ValueError, TypeError):
        return None
    user = await connection.fetchrow(USER, user_id)
    return user if user is not None and user["is_active"] else None


async def me(request: Request) -> Response:
    async with POOL.acquire() as connection:
        user = await user_for(request, connection)
        if user is None:
            return UNAUTHORISED
        return json({k: user[k] for k in USER_FIELDS})


async def files(request: Request) -> Response:
    limit, offset = 20, 0
    async with POOL.acquire() as connection:
        user = await user_for(request, connection)
        if user is None:
            return UNAUTHORISED
        rows = await connection.fetch(FILES, user["id"], limit + 1, offset)
    items = [{k: row[k] for k in FILE_FIELDS} for row in rows[:limit]]
    return json({"items": items, "limit": limit, "offset": offset, "has_more": len(rows) > limit})


async def search(request: Request) -> Response:
    body = orjson.loads(await request.body())
    kb_id = uuid.UUID(request.path_params["kb_id"])
    async with POOL.acquire() as connection:
        user = await user_for(request, connection)
        if user is None:
            return UNAUTHORISED
        kb = await connection.fetchrow(KB, kb_id, user["id"])
        if kb is None:
            return json({"detail": "Knowledge base not found"}, 404)
        [vector] = await EMBEDDER.embed([body["query"]])
        query = SEARCH if kb["chunk_count"] <= EXACT_MAX_CHUNKS else INDEXED_SEARCH
        rows = await connection.fetch(query, kb_id, vector, body.get("top_k", 5))
    results = [
        {
            "chunk_id": r["id"],
            "document_id": r["document_id"],
            "text": r["text"],
            "score": 1 - r["distance"],
        }
        for r in rows
    ]
    return json({"results": results})


async def healthz(request: Request) -> Response:
    return json({"status": "ok"})


async def init_connection(connection: asyncpg.Connection) -> None:
    await register_vector(connection)
    await connection.execute("SET hnsw.iterative_scan = relaxed_order; SET hnsw.ef_search = 100")


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    global POOL
    url = normalise_database_url(os.environ["DATABASE_URL"]).set(drivername="postgresql")
    size = int(os.environ.get("DB_POOL_SIZE", "10"))
    POOL = await asyncpg.create_pool(
        url.render_as_string(hide_password=False),
        min_size=size,
        max_size=size,
        init=init_connection,
    )
    yield
    await POOL.close()


KEY = os.environ.get("JWT_SECRET", "")
EMBEDDER = create_embedder(KnowledgeBaseSettings())  # the app's default model, same work
POOL: asyncpg.Pool
app = Starlette(
    routes=[
        Route("/api/v1/users/me", me),
        Route("/api/v1/files", files),
        Route("/api/v1/knowledge-bases/{kb_id}/search", search, methods=["POST"]),
        Route("/healthz", healthz),
    ],
    lifespan=lifespan,
)
