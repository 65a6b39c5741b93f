"""token version and login throttles

`users.token_version` is carried in every access token: a password change or a deactivation
bumps it and ends every token issued before. `login_throttles` counts failed logins per account
and per client address, in the database so that all replicas share the count.

Revision ID: 4e97f81a3ea4
Revises: c7a9e1f3b5d2
Create Date: 2026-11-23 10:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "4e97f81a3ea4"
down_revision: str | Sequence[str] | None = "c7a9e1f3b5d2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "login_throttles",
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_ends", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_login_throttles")),
    )
    op.create_index(
        "ix_login_throttles_window_ends", "login_throttles", ["window_ends"], unique=False
    )
    op.add_column(
        "users",
        sa.Column("token_version", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("users", "token_version")
    op.drop_index("ix_login_throttles_window_ends", table_name="login_throttles")
    op.drop_table("login_throttles")
