"""chunk provenance

Where each chunk came from: `chunks.page` (a PDF's page, from 1) and `chunks.section` (the
heading path, "Guide > Install"), both NULL-able and without defaults, so adding them rewrites
nothing. Chunks stored before have neither.

Revision ID: e4a7c2f9b813
Revises: 7b2e9c4d1a05
Create Date: 2026-12-03 17:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e4a7c2f9b813"
down_revision: str | Sequence[str] | None = "7b2e9c4d1a05"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("chunks", sa.Column("page", sa.Integer(), nullable=True), if_not_exists=True)
    op.add_column("chunks", sa.Column("section", sa.Text(), nullable=True), if_not_exists=True)


def downgrade() -> None:
    op.drop_column("chunks", "section", if_exists=True)
    op.drop_column("chunks", "page", if_exists=True)
