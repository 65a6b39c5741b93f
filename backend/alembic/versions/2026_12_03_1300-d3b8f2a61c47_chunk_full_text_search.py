"""chunk full-text search

Hybrid retrieval's keyword half: `chunks.language` (the text search configuration the chunk was
stored with) and `chunks.search_vector`, a stored generated column PostgreSQL keeps equal to
`to_tsvector(language, text)`, with a GIN index built concurrently (reads and writes of chunks
go on while it builds).

Adding a stored generated column rewrites `chunks` once, under an ACCESS EXCLUSIVE lock: on a
table of millions of rows, run this revision in a quiet window (the lock timeout stops it from
queueing behind traffic; it then fails cleanly and can be retried).

Revision ID: d3b8f2a61c47
Revises: 4e97f81a3ea4
Create Date: 2026-12-03 13:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "d3b8f2a61c47"
down_revision: str | Sequence[str] | None = "4e97f81a3ea4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

squawk_ignore = {
    "adding-field-with-default": "a stored generated column cannot be added without the one "
    "rewrite; the docstring says when to run it, and the lock timeout bounds the wait",
}


def upgrade() -> None:
    op.add_column(
        "chunks",
        sa.Column(
            "language",
            postgresql.REGCONFIG(),
            server_default=sa.text("'english'::regconfig"),
            nullable=False,
        ),
        if_not_exists=True,
    )
    op.add_column(
        "chunks",
        sa.Column(
            "search_vector",
            postgresql.TSVECTOR(),
            sa.Computed("to_tsvector(language, text)", persisted=True),
            nullable=False,
        ),
        if_not_exists=True,
    )
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_chunks_search_vector",
            "chunks",
            ["search_vector"],
            unique=False,
            postgresql_using="gin",
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_chunks_search_vector",
            table_name="chunks",
            postgresql_concurrently=True,
            if_exists=True,
        )
    op.drop_column("chunks", "search_vector", if_exists=True)
    op.drop_column("chunks", "language", if_exists=True)
