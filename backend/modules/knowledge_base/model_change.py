"""Changing the embedding model (or its dimension) while the API serves, in two releases.

The vectors of two models cannot be compared, and the API searches with one model: the old
vectors serve until the new ones are complete, then both switch together.

Release 1, revision `upgrade()`: `add_next_column(768)` (the new model's dimension). It adds
`chunks.embedding_next` beside `embedding`, with its own HNSW index built concurrently. The
models declare it too (so `alembic check` stays clean); the API is unchanged and keeps
searching `embedding` with the old model. Then run `python -m
backend.modules.knowledge_base.reembed` with the NEW model's settings: it fills
`embedding_next` in batches, chunks added meanwhile included.

Release 2, revision `upgrade()`: `swap_next_column()`, with the new settings and
`EMBEDDING_DIM` in the code. The old column and its index go, `embedding_next` becomes
`embedding` in one short transaction. Chunks added after `reembed` last looked have no vector
yet: run `reembed` once more after the release (keyword search finds them meanwhile). A replica
of release 1 still serving during the rollout answers a search with 503 and Retry-After.

These functions are written once and never changed: revisions call them, and a revision must
do the same thing every time it runs. A different procedure is a new function.
"""

from __future__ import annotations

from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy import Column

NEXT_COLUMN = "embedding_next"
INDEX = "ix_chunks_embedding_hnsw"
NEXT_INDEX = "ix_chunks_embedding_next_hnsw"


def add_next_column(dimension: int) -> None:
    """Release 1: the new model's column beside the old, empty, and its index (concurrently:
    chunks are read and written meanwhile)."""
    op.add_column("chunks", Column(NEXT_COLUMN, Vector(dimension)), if_not_exists=True)
    with op.get_context().autocommit_block():
        op.create_index(
            NEXT_INDEX,
            "chunks",
            [NEXT_COLUMN],
            postgresql_using="hnsw",
            postgresql_with={"m": 16, "ef_construction": 200},
            postgresql_ops={NEXT_COLUMN: "vector_cosine_ops"},
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def drop_next_column() -> None:
    """Release 1's downgrade: the new column and its index go; the old serve on."""
    op.drop_column("chunks", NEXT_COLUMN, if_exists=True)


def swap_next_column() -> None:
    """Release 2: the new column replaces the old, the index with it, in one transaction (a
    brief ACCESS EXCLUSIVE lock: no rewrite, no index build)."""
    op.drop_column("chunks", "embedding")
    op.alter_column("chunks", NEXT_COLUMN, new_column_name="embedding")
    op.execute(f"ALTER INDEX {NEXT_INDEX} RENAME TO {INDEX}")
