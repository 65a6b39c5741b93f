"""keyword postings

`chunk_terms`: each chunk's lexemes with their frequency and the chunk's length, the postings
keyword search ranks by BM25. Statement-level triggers on `chunks` keep them (COPY fires them
too), from the stored `search_vector`; existing chunks are indexed here.

Revision ID: 5e1b7a9c3d40
Revises: a91d3e5b7c24
Create Date: 2026-12-06 13:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5e1b7a9c3d40"
down_revision: str | Sequence[str] | None = "a91d3e5b7c24"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

squawk_ignore = {
    "prefer-bigint-over-int": "tf is at most 256 (a tsvector's positions per lexeme), length a "
    "chunk's distinct lexemes",
}

# The postings of the chunks `c` in {rows}, as their stored tsvectors have them.
POSTINGS = """
    SELECT c.knowledge_base_id, t.lexeme, c.id, cardinality(t.positions), length(c.search_vector)
    FROM {rows}, unnest(c.search_vector) AS t
"""
CHANGED = "new_chunks AS c JOIN old_chunks AS o ON o.id = c.id"


def upgrade() -> None:
    op.create_table(
        "chunk_terms",
        sa.Column("knowledge_base_id", sa.Uuid(), nullable=False),
        sa.Column("lexeme", sa.Text(), nullable=False),
        sa.Column("chunk_id", sa.Uuid(), nullable=False),
        sa.Column("tf", sa.Integer(), nullable=False),
        sa.Column("length", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["chunk_id"],
            ["chunks.id"],
            name=op.f("fk_chunk_terms_chunk_id_chunks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "knowledge_base_id", "lexeme", "chunk_id", name=op.f("pk_chunk_terms")
        ),
        if_not_exists=True,
    )
    op.create_index(
        op.f("ix_chunk_terms_chunk_id"),
        "chunk_terms",
        ["chunk_id"],
        unique=False,
        if_not_exists=True,
    )
    insert = "INSERT INTO chunk_terms (knowledge_base_id, lexeme, chunk_id, tf, length)"
    op.execute(f"""
        CREATE OR REPLACE FUNCTION chunk_terms_of_new_chunks() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            {insert} {POSTINGS.format(rows="new_chunks AS c")};
            RETURN NULL;
        END $$
    """)
    op.execute(f"""
        CREATE OR REPLACE FUNCTION chunk_terms_of_changed_chunks() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            -- Only chunks whose lexemes changed (a new language); a new vector changes none.
            DELETE FROM chunk_terms WHERE chunk_id IN (
                SELECT n.id FROM new_chunks AS n JOIN old_chunks AS o USING (id)
                WHERE n.search_vector <> o.search_vector
            );
            {insert} {POSTINGS.format(rows=CHANGED)}
                WHERE c.search_vector <> o.search_vector;
            RETURN NULL;
        END $$
    """)
    op.execute("""
        CREATE TRIGGER chunk_terms_on_insert AFTER INSERT ON chunks
        REFERENCING NEW TABLE AS new_chunks
        FOR EACH STATEMENT EXECUTE FUNCTION chunk_terms_of_new_chunks()
    """)
    op.execute("""
        CREATE TRIGGER chunk_terms_on_update AFTER UPDATE ON chunks
        REFERENCING OLD TABLE AS old_chunks NEW TABLE AS new_chunks
        FOR EACH STATEMENT EXECUTE FUNCTION chunk_terms_of_changed_chunks()
    """)
    op.execute(f"{insert} {POSTINGS.format(rows='chunks AS c')} ON CONFLICT DO NOTHING")


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS chunk_terms_on_update ON chunks")
    op.execute("DROP TRIGGER IF EXISTS chunk_terms_on_insert ON chunks")
    op.execute("DROP FUNCTION IF EXISTS chunk_terms_of_changed_chunks()")
    op.execute("DROP FUNCTION IF EXISTS chunk_terms_of_new_chunks()")
    op.drop_index(op.f("ix_chunk_terms_chunk_id"), table_name="chunk_terms", if_exists=True)
    op.drop_table("chunk_terms", if_exists=True)
