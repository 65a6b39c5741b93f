"""The ceiling of this stack's idiom: FastAPI with `Depends` and `response_model`, over the raw
asyncpg pool, no SQLAlchemy. The baseline's SQL and token check, written the way FastAPI is
written, with the app's own response models; what it loses against the baseline is what
FastAPI and pydantic cost.

    DATABASE_URL=... JWT_SECRET=... uvicorn bench.ceiling:app --no-access-log
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import OAuth2PasswordBearer

from backend.modules.file.schemas import FilePage
from backend.modules.knowledge_base.schemas import SearchQuery, SearchResults
from backend.modules.user.schemas import UserRead
from bench import baseline

oauth2 = OAuth2PasswordBearer(tokenUrl="/token", auto_error=False)


async def connection() -> AsyncIterator[asyncpg.Connection]:
    async with baseline.POOL.acquire() as conn:
        yield conn


Connection = Annotated[asyncpg.Connection, Depends(connection)]


async def current_user(
    request: Request, conn: Connection, token: Annotated[str | None, Depends(oauth2)]
) -> asyncpg.Record:
    user = await baseline.user_for(request, conn)
    if user is None:
        raise HTTPException(401, "Not authenticated")
    return user


User = Annotated[asyncpg.Record, Depends(current_user)]


app = FastAPI(lifespan=baseline.lifespan)


@app.get("/api/v1/users/me", response_model=UserRead)
async def me(user: User) -> Any:
    return dict(user)


@app.get("/api/v1/files", response_model=FilePage)
async def files(user: User, conn: Connection, limit: int = 20, offset: int = 0) -> Any:
    rows = await conn.fetch(baseline.FILES, user["id"], limit + 1, offset)
    return {
        "items": [dict(row) for row in rows[:limit]],
        "limit": limit,
        "offset": offset,
        "has_more": len(rows) > limit,
    }


@app.post("/api/v1/knowledge-bases/{kb_id}/search", response_model=SearchResults)
async def search(kb_id: uuid.UUID, data: SearchQuery, user: User, conn: Connection) -> Any:
    kb = await conn.fetchrow(baseline.KB, kb_id, user["id"])
    if kb is None:
        raise HTTPException(404, "Knowledge base not found")
    [vector] = await baseline.EMBEDDER.embed([data.query])
    query = (
        baseline.SEARCH
        if kb["chunk_count"] <= baseline.EXACT_MAX_CHUNKS
        else baseline.INDEXED_SEARCH
    )
    rows = await conn.fetch(query, kb_id, vector, data.top_k)
    return {
        "results": [
            {
                "chunk_id": r["id"],
                "document_id": r["document_id"],
                "text": r["text"],
                "score": 1 - r["distance"],
            }
            for r in rows
        ]
    }


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
