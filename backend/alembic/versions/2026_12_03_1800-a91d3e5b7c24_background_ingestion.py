"""background ingestion

Documents are processed by a worker: `documents.status` (pending, processing, ready, failed),
`error`, `attempts`, `run_after`, `locked_until` and `pending_text` (a text body until it is
chunked), and a partial index of what is left to do. Documents stored before are `ready`: the
column is added with that default (no rewrite), then the default becomes `pending`.

Revision ID: a91d3e5b7c24
Revises: e4a7c2f9b813
Create Date: 2026-12-03 18:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a91d3e5b7c24"
down_revision: str | Sequence[str] | None = "e4a7c2f9b813"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

squawk_ignore = {
    "prefer-robust-stmts": "SET DEFAULT has no IF EXISTS form, and running it again is harmless",
    "prefer-bigint-over-int": "attempts counts up to INGESTION_MAX_ATTEMPTS (at most 50)",
}


def upgrade() -> None:
    op.add_column(
        "documents",
        sa.Column("status", sa.Text(), server_default="ready", nullable=False),
        if_not_exists=True,
    )
    op.alter_column("documents", "status", server_default="pending")
    op.add_column("documents", sa.Column("error", sa.Text(), nullable=True), if_not_exists=True)
    op.add_column(
        "documents",
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        if_not_exists=True,
    )
    op.add_column(
        "documents",
        sa.Column(
            "run_after",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        if_not_exists=True,
    )
    op.add_column(
        "documents",
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        if_not_exists=True,
    )
    op.add_column(
        "documents", sa.Column("pending_text", sa.Text(), nullable=True), if_not_exists=True
    )
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_documents_queue",
            "documents",
            ["run_after"],
            unique=False,
            postgresql_where=sa.text("status IN ('pending', 'processing')"),
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_documents_queue",
            table_name="documents",
            postgresql_concurrently=True,
            if_exists=True,
        )
    for column in ("pending_text", "locked_until", "run_after", "attempts", "error", "status"):
        op.drop_column("documents", column, if_exists=True)
