from __future__ import annotations

import uuid
from datetime import datetime

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    Computed,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Text,
    func,
)
from sqlalchemy import text as sql
from sqlalchemy.dialects.postgresql import REGCONFIG, TSVECTOR
from sqlalchemy.orm import Mapped, mapped_column

from backend.db.base import Base, Timestamps, UUIDPrimaryKey

# The chunks.embedding column's dimension, fixed by migration. EMBEDDING_DIM must match it;
# changing it (or the model) takes two revisions and `reembed` between them: see the README,
# "Changing the embedding model".
EMBEDDING_DIM = 256


class KnowledgeBase(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "knowledge_bases"

    owner_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    # Kept up to date by the service: it decides between exact and approximate search.
    chunk_count: Mapped[int] = mapped_column(Integer, server_default="0")


class Document(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "documents"

    knowledge_base_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True
    )
    title: Mapped[str] = mapped_column(String(300))
    source_file_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("files.id", ondelete="SET NULL")
    )
    chunk_count: Mapped[int] = mapped_column(Integer)
    char_count: Mapped[int] = mapped_column(Integer)
    # Ingestion (backend/modules/knowledge_base/ingestion.py): pending -> processing -> ready,
    # or failed with `error`. The table is the queue: `run_after` is when it may next be tried,
    # `locked_until` the worker's lease, `pending_text` a text body until it is chunked.
    status: Mapped[str] = mapped_column(Text, server_default="pending")
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    run_after: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    pending_text: Mapped[str | None] = mapped_column(Text, deferred=True)

    __table_args__ = (
        # What workers claim from: small, whatever the number of ready documents.
        Index(
            "ix_documents_queue",
            "run_after",
            postgresql_where=sql("status IN ('pending', 'processing')"),
        ),
    )


class Chunk(UUIDPrimaryKey, Base):
    __tablename__ = "chunks"

    document_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), index=True
    )
    # Repeated from the document so a search filters chunks without a join.
    knowledge_base_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True
    )
    ordinal: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    # Where in the document the text came from: the page (PDF, from 1) and the headings it sits
    # under ("Guide > Install"); NULL when the format has none.
    page: Mapped[int | None] = mapped_column(Integer)
    section: Mapped[str | None] = mapped_column(Text)
    # NULL until the chunk is embedded (after a model change, until `reembed` reaches it):
    # vector search skips it meanwhile, keyword search finds it.
    embedding: Mapped[list[float] | None] = mapped_column(Vector(EMBEDDING_DIM))
    # Full-text search: the text's lexemes in the chunk's language (SEARCH_LANGUAGE when it was
    # stored), kept by PostgreSQL itself. `UPDATE chunks SET language = 'german'` re-indexes.
    language: Mapped[str] = mapped_column(REGCONFIG, server_default=sql("'english'::regconfig"))
    search_vector: Mapped[str] = mapped_column(
        TSVECTOR, Computed("to_tsvector(language, text)", persisted=True)
    )

    __table_args__ = (
        Index(
            "ix_chunks_embedding_hnsw",
            "embedding",
            postgresql_using="hnsw",
            postgresql_with={"m": 16, "ef_construction": 200},
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
        Index("ix_chunks_search_vector", "search_vector", postgresql_using="gin"),
    )


class ChunkTerm(Base):
    """A chunk's lexeme and how often it occurs: the postings keyword search ranks by BM25
    (search.py). Kept by PostgreSQL itself, from `chunks.search_vector`, by the statement
    triggers revision 5e1b7a9c3d40 puts on `chunks` (any write path: COPY, an UPDATE of the
    language); a chunk's postings go with it."""

    __tablename__ = "chunk_terms"

    # Repeated from the chunk: a search reads one knowledge base's postings of a few lexemes.
    knowledge_base_id: Mapped[uuid.UUID] = mapped_column()
    lexeme: Mapped[str] = mapped_column(Text)
    chunk_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("chunks.id", ondelete="CASCADE"), index=True
    )
    # Occurrences of the lexeme in the chunk, and the chunk's distinct lexemes (its length).
    tf: Mapped[int] = mapped_column(Integer)
    length: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        # tf and length in the key's leaves: a search reads postings from the index alone.
        PrimaryKeyConstraint(
            "knowledge_base_id", "lexeme", "chunk_id", postgresql_include=["tf", "length"]
        ),
    )


class KeywordTerm(Base):
    """How many chunks of a knowledge base hold a lexeme (BM25's document frequency); the
    empty lexeme's row holds the sum of the chunks' lengths. Kept by PostgreSQL itself, by
    the statement triggers revision 8c3f1a6d2e97 puts on `chunks`."""

    __tablename__ = "keyword_terms"

    knowledge_base_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("knowledge_bases.id", ondelete="CASCADE"), primary_key=True
    )
    lexeme: Mapped[str] = mapped_column(Text, primary_key=True)
    chunks: Mapped[int] = mapped_column(BigInteger)
