"""Changing a vector column's model (or its dimension) while the API serves, in two releases.

Revisions call these (a revision imports nothing from a module: deleting the module must not
break an upgrade from an empty database). For the knowledge base's `chunks.embedding`:

Release 1, revision `upgrade()`: `add_next_column("chunks", 768)` (the new model's dimension).
It adds `chunks.embedding_next` beside `embedding`, with its own HNSW index built concurrently.
The models declare it too (so `alembic check` stays clean); the API is unchanged and keeps
searching `embedding` with the old model. Then the module's re-embedding command, with the NEW
model's settings, fills `embedding_next` (backend/modules/knowledge_base/README.md).

Release 2, revision `upgrade()`: `swap_next_column("chunks")`, with the new settings and the
dimension in the code. The old column and its index go, `embedding_next` becomes `embedding` in
one short transaction.

These functions are written once and never changed: revisions call them, and a revision must
do the same thing every time it runs. A different procedure is a new function.
"""

from __future__ import annotations

from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy import Column

NEXT = "_next"


def _index(table: str, column: str) -> str:
    return f"ix_{table}_{column}_hnsw"


def add_next_column(table: str, dimension: int, *, column: str = "embedding") -> None:
    """Release 1: the new model's column (`<column>_next`) beside the old, empty, and its HNSW
    index (built concurrently: rows are read and written meanwhile)."""
    next_column = column + NEXT
    op.add_column(table, Column(next_column, Vector(dimension)), if_not_exists=True)
    with op.get_context().autocommit_block():
        op.create_index(
            _index(table, next_column),
            table,
            [next_column],
            postgresql_using="hnsw",
            postgresql_with={"m": 16, "ef_construction": 200},
            postgresql_ops={next_column: "vector_cosine_ops"},
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def drop_next_column(table: str, *, column: str = "embedding") -> None:
    """Release 1's downgrade: the new column and its index go; the old serve on."""
    op.drop_column(table, column + NEXT, if_exists=True)


def swap_next_column(table: str, *, column: str = "embedding") -> None:
    """Release 2: the new column replaces the old, the index with it, in one transaction (a
    brief ACCESS EXCLUSIVE lock: no rewrite, no index build)."""
    next_column = column + NEXT
    op.drop_column(table, column)
    op.alter_column(table, next_column, new_column_name=column)
    op.execute(f"ALTER INDEX {_index(table, next_column)} RENAME TO {_index(table, column)}")
