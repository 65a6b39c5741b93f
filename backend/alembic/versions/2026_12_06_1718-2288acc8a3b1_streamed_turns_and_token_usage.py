"""streamed turns and token usage

A turn is a run the server owns (`conversation_runs`, at most one running per conversation)
whose server-sent events are kept (`conversation_run_events`) so that a client that lost its
stream follows the rest from any replica; the language model's tokens spent per user and UTC
day (`token_usage`, the daily limit of every replica); an answer's token usage on its message.
All new tables, empty: nothing to backfill.

Revision ID: 2288acc8a3b1
Revises: 5d444fabc409
Create Date: 2026-12-06 17:18:55.436257

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "2288acc8a3b1"
down_revision: str | Sequence[str] | None = "5d444fabc409"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

squawk_ignore = {
    "prefer-text-field": "a run's status and an event's type: short names, checked by the app",
    "prefer-bigint-over-int": "an event's number within one run, a message's token counts",
}


def upgrade() -> None:
    op.create_table(
        "token_usage",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_token_usage_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "day", name=op.f("pk_token_usage")),
    )
    op.create_table(
        "conversation_runs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="running", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_conversation_runs_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversation_runs")),
    )
    op.create_index(
        "ix_conversation_runs_conversation_id",
        "conversation_runs",
        ["conversation_id"],
        unique=False,
    )
    op.create_index(
        "uq_conversation_runs_running",
        "conversation_runs",
        ["conversation_id"],
        unique=True,
        postgresql_where=sa.text("status = 'running'"),
    )
    op.create_table(
        "conversation_run_events",
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(length=20), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["conversation_runs.id"],
            name=op.f("fk_conversation_run_events_run_id_conversation_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "seq", name=op.f("pk_conversation_run_events")),
    )
    op.add_column("messages", sa.Column("prompt_tokens", sa.Integer(), nullable=True))
    op.add_column("messages", sa.Column("completion_tokens", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("messages", "completion_tokens")
    op.drop_column("messages", "prompt_tokens")
    op.drop_table("conversation_run_events")
    op.drop_index(
        "uq_conversation_runs_running",
        table_name="conversation_runs",
        postgresql_where=sa.text("status = 'running'"),
    )
    op.drop_index("ix_conversation_runs_conversation_id", table_name="conversation_runs")
    op.drop_table("conversation_runs")
    op.drop_table("token_usage")
