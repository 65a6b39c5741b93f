"""vector extension and users

Revision ID: 4c1f0e8a2b7d
Revises:
Create Date: 2026-11-22 09:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "4c1f0e8a2b7d"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Needs a role allowed to create extensions the first time; on managed PostgreSQL a DBA or
    # the provider runs it once, after which IF NOT EXISTS makes this a no-op.
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.create_table(
        "users",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("hashed_password", sa.String(length=255), nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("is_superuser", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )


def downgrade() -> None:
    op.drop_table("users")
    # Dropped only by a role that may (its owner, a superuser): an extension a DBA created for
    # this database stays, as it was before the first upgrade.
    op.execute(
        "DO $$ BEGIN IF EXISTS (SELECT FROM pg_extension WHERE extname = 'vector' "
        "AND pg_has_role(extowner, 'USAGE')) THEN DROP EXTENSION vector; END IF; END $$"
    )
