"""Vectors as bind parameters: sent as binary `real[]` arrays and cast to pgvector's type by
the server.

pgvector's SQLAlchemy type sends a vector as text: 384 floats formatted one by one cost
~400 us of CPU per vector, more than the whole rest of a search request's SQL. asyncpg encodes
a `real[]` in binary in microseconds, and PostgreSQL casts it to `vector` in C:

    NEAREST = select(Chunk.id).order_by(Chunk.embedding.cosine_distance(vector_param("q", 384)))
    await session.execute(NEAREST, {"q": [0.1, ...]})

Columns keep pgvector's `Vector` type (what Alembic autogenerates and compares); results
still come back through it.
"""

from __future__ import annotations

from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import REAL, ColumnElement, bindparam, cast
from sqlalchemy.dialects.postgresql import ARRAY


def vector_param(name: str, dimension: int) -> ColumnElement[Any]:
    """A bind parameter `name` taking a sequence of floats, as a `vector(dimension)`."""
    return cast(bindparam(name, type_=ARRAY(REAL)), Vector(dimension))
