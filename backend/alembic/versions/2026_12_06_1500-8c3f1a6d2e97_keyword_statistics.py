"""keyword statistics

`keyword_terms`: per knowledge base, how many chunks hold each lexeme (BM25's document
frequency), and under the empty lexeme (no tsvector has it) the sum of the chunks' lengths (for
their average). Statement-level triggers on `chunks` keep it, like the postings; a search reads
a few rows of it instead of counting the postings of the query's common words. The postings'
primary key carries `tf` and `length`, so a search reads postings from the index alone.

Revision ID: 8c3f1a6d2e97
Revises: 5e1b7a9c3d40
Create Date: 2026-12-06 15:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8c3f1a6d2e97"
down_revision: str | Sequence[str] | None = "5e1b7a9c3d40"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

squawk_ignore = {
    "disallowed-unique-constraint": "the primary key is rebuilt on an index built concurrently "
    "just before (USING INDEX), which takes no long lock",
    "ban-drop-constraint": "the primary key is dropped and added again, on the same columns, in "
    "one transaction: no client ever sees the table without it",
}

# Per knowledge base and lexeme, the chunks of `{rows}` holding it, and under '' the sum of
# their lengths.
COUNTS = """
    SELECT knowledge_base_id, lexeme, sum(n) AS n FROM (
        SELECT c.knowledge_base_id, t.lexeme, 1 AS n
        FROM {rows}, unnest(c.search_vector) AS t
        UNION ALL
        SELECT c.knowledge_base_id, '', length(c.search_vector) FROM {rows}
    ) AS counted
    GROUP BY knowledge_base_id, lexeme
"""
# Rows in a fixed order: concurrent ingestions in one knowledge base wait for each other
# instead of deadlocking. Chunks gone only lower counts (their knowledge base may be going
# too), and a lexeme no chunk holds any more loses its row.
ADD = """
    INSERT INTO keyword_terms AS k (knowledge_base_id, lexeme, chunks)
    SELECT * FROM ({counts}) AS counts ORDER BY knowledge_base_id, lexeme
    ON CONFLICT (knowledge_base_id, lexeme) DO UPDATE SET chunks = k.chunks + excluded.chunks;
"""
SUBTRACT = """
    UPDATE keyword_terms AS k SET chunks = k.chunks - counts.n FROM ({counts}) AS counts
    WHERE k.knowledge_base_id = counts.knowledge_base_id AND k.lexeme = counts.lexeme;
    DELETE FROM keyword_terms AS k USING ({counts}) AS counts
    WHERE k.knowledge_base_id = counts.knowledge_base_id AND k.lexeme = counts.lexeme
        AND k.chunks <= 0;
"""
# The chunks an UPDATE changed the lexemes of (a new language), as they were and as they are.
CHANGED = """(
    SELECT {side}.* FROM new_chunks AS n JOIN old_chunks AS o USING (id)
    WHERE n.search_vector <> o.search_vector
) AS c"""


def _counting(name: str, *parts: tuple[str, str]) -> None:
    """A trigger function applying each part (`rows`, ADD or SUBTRACT) to keyword_terms."""
    body = "".join(change.format(counts=COUNTS.format(rows=rows)) for rows, change in parts)
    op.execute(f"""
        CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            {body}
            RETURN NULL;
        END $$
    """)


def upgrade() -> None:
    op.create_table(
        "keyword_terms",
        sa.Column("knowledge_base_id", sa.Uuid(), nullable=False),
        sa.Column("lexeme", sa.Text(), nullable=False),
        sa.Column("chunks", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["knowledge_base_id"],
            ["knowledge_bases.id"],
            name=op.f("fk_keyword_terms_knowledge_base_id_knowledge_bases"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("knowledge_base_id", "lexeme", name=op.f("pk_keyword_terms")),
        if_not_exists=True,
    )
    # The postings' key with tf and length in its leaves: built beside the old one without
    # blocking writes, then swapped in.
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_chunk_terms_covering")
        op.execute(
            "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS ix_chunk_terms_covering ON chunk_terms "
            "(knowledge_base_id, lexeme, chunk_id) INCLUDE (tf, length)"
        )
    op.execute("ALTER TABLE chunk_terms DROP CONSTRAINT pk_chunk_terms")
    op.execute(
        "ALTER TABLE chunk_terms ADD CONSTRAINT pk_chunk_terms PRIMARY KEY "
        "USING INDEX ix_chunk_terms_covering"
    )
    new, old = "new_chunks AS c", "old_chunks AS c"
    _counting("keyword_terms_of_new_chunks", (new, ADD))
    _counting("keyword_terms_of_old_chunks", (old, SUBTRACT))
    _counting(
        "keyword_terms_of_changed_chunks",
        (CHANGED.format(side="o"), SUBTRACT),
        (CHANGED.format(side="n"), ADD),
    )
    for event, tables, function in (
        ("INSERT", "NEW TABLE AS new_chunks", "new"),
        ("DELETE", "OLD TABLE AS old_chunks", "old"),
        ("UPDATE", "OLD TABLE AS old_chunks NEW TABLE AS new_chunks", "changed"),
    ):
        op.execute(f"""
            CREATE TRIGGER keyword_terms_on_{event.lower()} AFTER {event} ON chunks
            REFERENCING {tables}
            FOR EACH STATEMENT EXECUTE FUNCTION keyword_terms_of_{function}_chunks()
        """)
    # The chunks stored before: counted with writes held off, so none is counted twice or missed.
    op.execute("LOCK TABLE chunks IN SHARE MODE")
    op.execute(
        "INSERT INTO keyword_terms (knowledge_base_id, lexeme, chunks) "
        + COUNTS.format(rows="chunks AS c")
        + " ON CONFLICT DO NOTHING"
    )


def downgrade() -> None:
    for event in ("update", "delete", "insert"):
        op.execute(f"DROP TRIGGER IF EXISTS keyword_terms_on_{event} ON chunks")
    for rows in ("changed", "old", "new"):
        op.execute(f"DROP FUNCTION IF EXISTS keyword_terms_of_{rows}_chunks()")
    op.drop_table("keyword_terms", if_exists=True)
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_chunk_terms_key")
        op.execute(
            "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS ix_chunk_terms_key ON chunk_terms "
            "(knowledge_base_id, lexeme, chunk_id)"
        )
    op.execute("ALTER TABLE chunk_terms DROP CONSTRAINT pk_chunk_terms")
    op.execute(
        "ALTER TABLE chunk_terms ADD CONSTRAINT pk_chunk_terms PRIMARY KEY "
        "USING INDEX ix_chunk_terms_key"
    )
