"""embeddings by wordllama

The default embedder becomes a real model (WordLlama, 256 dimensions) instead of hashed words
(384): `chunks.embedding` becomes `vector(256)`, and NULL-able, since no vector of the old model
fits it. Every chunk's vector is NULL after this revision until `python -m
backend.modules.knowledge_base.reembed` has embedded it again (`python3 dev.py serve` runs it
at start); meanwhile keyword search finds those chunks and vector search skips them.

This is the one-step form, for a project that is not yet serving anyone: the column's type
changes under an ACCESS EXCLUSIVE lock (a rewrite) and the vectors are gone at once. A live
project changes its model in two releases, the old vectors serving until the new ones are
complete: README, "Changing the embedding model".

The HNSW index is rebuilt with the column, empty: at once.

Revision ID: 7b2e9c4d1a05
Revises: d3b8f2a61c47
Create Date: 2026-12-03 16:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector

revision: str = "7b2e9c4d1a05"
down_revision: str | Sequence[str] | None = "d3b8f2a61c47"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

squawk_ignore = {
    "changing-column-type": "the old model's vectors cannot be converted: the column is "
    "emptied and retyped at once (the one-step form; the docstring says when not to use it)",
    "ban-drop-not-null": "a chunk has no vector until it is embedded again; the code reads NULL "
    "as that (vector search skips it)",
}


def _retype(dimension: int) -> None:
    # The rewrite rebuilds the HNSW index with the column: on NULLs, at once.
    op.alter_column(
        "chunks",
        "embedding",
        type_=Vector(dimension),
        postgresql_using=f"NULL::vector({dimension})",
        nullable=True,
    )


def upgrade() -> None:
    _retype(256)


def downgrade() -> None:
    # Back to the hashing embedder's 384 dimensions, empty: run `reembed` with
    # EMBEDDING_PROVIDER=hashing EMBEDDING_DIM=384. The column stays NULL-able (its rows are NULL).
    _retype(384)
