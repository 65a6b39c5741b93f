"""Vectors as bind parameters: sent as binary `real[]` arrays and cast to pgvector's type by
the server.

pgvector's SQLAlchemy type sends a vector as text: 384 floats formatted one by one cost
~400 us of CPU per vector, more than the whole rest of a search request's SQL. asyncpg encodes
a `real[]` in binary in microseconds, and PostgreSQL casts it to `vector` in C:

    NEAREST = select(Chunk.id).order_by(Chunk.embedding.cosine_distance(query_vector("q", 384)))
    await session.execute(NEAREST, {"q": [0.1, ...]})

    INSERT = insert(Chunk).values(embedding=vector_value("vector", 384))
    await session.execute(INSERT, [{"vector": [0.1, ...], ...}, ...])

Columns keep pgvector's `Vector` type (what Alembic autogenerates and compares); results
still come back through it.
"""

from __future__ import annotations

from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import REAL, ColumnElement, bindparam, cast, select
from sqlalchemy.dialects.postgresql import ARRAY


def vector_value(name: str, dimension: int) -> ColumnElement[Any]:
    """A bind parameter `name` taking a sequence of floats, as a `vector(dimension)`: for a
    value stored (an INSERT's row), cast once per row."""
    return cast(bindparam(name, type_=ARRAY(REAL)), Vector(dimension))


def query_vector(name: str, dimension: int) -> ColumnElement[Any]:
    """The same, for a vector compared with many rows (`ORDER BY embedding <=> ...`): a scalar
    subquery, which PostgreSQL evaluates once per statement. A bare cast would be evaluated
    again for every row a sequential scan reads (measured: 3x the scan's time), whenever a
    prepared statement's generic plan does not use the index."""
    return select(vector_value(name, dimension)).scalar_subquery()
