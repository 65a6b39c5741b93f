"""What the raw baseline's handlers share (bench/baseline.py, and each module's part of it in
bench/modules/): the asyncpg pool, the token check, orjson responses."""

from __future__ import annotations

import os
import uuid
from typing import Any

import asyncpg
import jwt
import orjson
from starlette.requests import Request
from starlette.responses import Response

USER = "SELECT * FROM users WHERE id = $1"
KEY = os.environ.get("JWT_SECRET", "")


class Pool:
    """The baseline's pool, made by its lifespan."""

    pool: asyncpg.Pool


def json(body: Any, status: int = 200) -> Response:
    # default=str: asyncpg returns its own UUID type, which orjson does not know.
    return Response(
        orjson.dumps(body, default=str), status_code=status, media_type="application/json"
    )


UNAUTHORISED = json({"detail": "Not authenticated"}, 401)


async def user_for(request: Request, connection: asyncpg.Connection) -> asyncpg.Record | None:
    """The active user the bearer token names (the same check as the app's)."""
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
