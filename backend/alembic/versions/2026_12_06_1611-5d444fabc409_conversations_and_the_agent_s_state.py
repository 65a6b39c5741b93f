"""conversations and the agent's state

Conversations and their messages; LangGraph's checkpointer tables (`checkpoints`,
`checkpoint_blobs`, `checkpoint_writes`, `checkpoint_migrations`), created here under Alembic's
lock rather than by `AsyncPostgresSaver.setup()` at start: its migrations 0-9 (langgraph-
checkpoint-postgres 3.x), copied so this revision never changes with the library, each recorded
in `checkpoint_migrations` as `setup()` records it; the index builds run CONCURRENTLY, outside
a transaction. A LangGraph release that adds migrations gets a revision applying the new ones
(docs/migrations.md); `/readyz` says when the installed library expects more. A trigger deletes
a conversation's checkpoints with it, however it is deleted (its owner's deletion included).

Revision ID: 5d444fabc409
Revises: 8c3f1a6d2e97
Create Date: 2026-12-06 16:11:31.423359

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "5d444fabc409"
down_revision: str | Sequence[str] | None = "8c3f1a6d2e97"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

squawk_ignore = {
    "prefer-bigint-over-int": "LangGraph's own schema, as its library defines it",
    "prefer-text-field": "a title's and a role's length, checked by the API as well",
    "prefer-robust-stmts": "LangGraph's statements are its library's, run once per version",
    "ban-drop-not-null": "LangGraph's migration 4, on the table it created just before",
}

# langgraph.checkpoint.postgres.base.MIGRATIONS as of 3.x, verbatim: version n is the n-th.
# ruff: noqa: E501
CHECKPOINTER_MIGRATIONS = [
    "CREATE TABLE IF NOT EXISTS checkpoint_migrations (\n    v INTEGER PRIMARY KEY\n);",
    "CREATE TABLE IF NOT EXISTS checkpoints (\n    thread_id TEXT NOT NULL,\n    checkpoint_ns TEXT NOT NULL DEFAULT '',\n    checkpoint_id TEXT NOT NULL,\n    parent_checkpoint_id TEXT,\n    type TEXT,\n    checkpoint JSONB NOT NULL,\n    metadata JSONB NOT NULL DEFAULT '{}',\n    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)\n);",
    "CREATE TABLE IF NOT EXISTS checkpoint_blobs (\n    thread_id TEXT NOT NULL,\n    checkpoint_ns TEXT NOT NULL DEFAULT '',\n    channel TEXT NOT NULL,\n    version TEXT NOT NULL,\n    type TEXT NOT NULL,\n    blob BYTEA,\n    PRIMARY KEY (thread_id, checkpoint_ns, channel, version)\n);",
    "CREATE TABLE IF NOT EXISTS checkpoint_writes (\n    thread_id TEXT NOT NULL,\n    checkpoint_ns TEXT NOT NULL DEFAULT '',\n    checkpoint_id TEXT NOT NULL,\n    task_id TEXT NOT NULL,\n    idx INTEGER NOT NULL,\n    channel TEXT NOT NULL,\n    type TEXT,\n    blob BYTEA NOT NULL,\n    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)\n);",
    "ALTER TABLE checkpoint_blobs ALTER COLUMN blob DROP not null;",
    "SELECT 1;",
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS checkpoints_thread_id_idx ON checkpoints(thread_id);",
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS checkpoint_blobs_thread_id_idx ON checkpoint_blobs(thread_id);",
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS checkpoint_writes_thread_id_idx ON checkpoint_writes(thread_id);",
    "ALTER TABLE checkpoint_writes ADD COLUMN IF NOT EXISTS task_path TEXT NOT NULL DEFAULT '';",
]


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column(
            "knowledge_base_ids", postgresql.ARRAY(sa.Uuid()), server_default="{}", nullable=False
        ),
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
            ["owner_id"],
            ["users.id"],
            name=op.f("fk_conversations_owner_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversations")),
    )
    op.create_index(op.f("ix_conversations_owner_id"), "conversations", ["owner_id"], unique=False)
    op.create_table(
        "messages",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column(
            "citations",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="[]",
            nullable=False,
        ),
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
            name=op.f("fk_messages_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
    )
    op.create_index(
        "ix_messages_conversation_id_seq", "messages", ["conversation_id", "seq"], unique=False
    )
    _checkpointer_migrations()
    op.execute("""
        CREATE OR REPLACE FUNCTION delete_conversation_checkpoints() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM checkpoint_writes WHERE thread_id IN (SELECT id::text FROM gone);
            DELETE FROM checkpoint_blobs WHERE thread_id IN (SELECT id::text FROM gone);
            DELETE FROM checkpoints WHERE thread_id IN (SELECT id::text FROM gone);
            RETURN NULL;
        END $$
    """)
    op.execute("""
        CREATE TRIGGER conversations_delete_checkpoints AFTER DELETE ON conversations
        REFERENCING OLD TABLE AS gone
        FOR EACH STATEMENT EXECUTE FUNCTION delete_conversation_checkpoints()
    """)


def _checkpointer_migrations() -> None:
    """The versions not applied yet, as `setup()` would apply them, each recorded."""
    op.execute(CHECKPOINTER_MIGRATIONS[0])
    applied = -1  # offline (--sql): from scratch
    if not op.get_context().as_sql:
        latest = sa.text("SELECT coalesce(max(v), -1) FROM checkpoint_migrations")
        applied = op.get_bind().execute(latest).scalar_one()
    for version in range(applied + 1, len(CHECKPOINTER_MIGRATIONS)):
        statement = CHECKPOINTER_MIGRATIONS[version]
        if "CONCURRENTLY" in statement:
            with op.get_context().autocommit_block():
                op.execute(statement)
        else:
            op.execute(statement)
        op.execute(f"INSERT INTO checkpoint_migrations (v) VALUES ({version})")


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS conversations_delete_checkpoints ON conversations")
    op.execute("DROP FUNCTION IF EXISTS delete_conversation_checkpoints()")
    for table in ("checkpoint_writes", "checkpoint_blobs", "checkpoints", "checkpoint_migrations"):
        op.execute(f"DROP TABLE IF EXISTS {table}")
    op.drop_index("ix_messages_conversation_id_seq", table_name="messages")
    op.drop_table("messages")
    op.drop_index(op.f("ix_conversations_owner_id"), table_name="conversations")
    op.drop_table("conversations")
