from __future__ import annotations

import uuid

from pgvector.sqlalchemy import Vector
from sqlalchemy import Computed, ForeignKey, Index, Integer, String, Text
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
            postgresql_with={"m": 16, "ef_construction": 64},
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
        Index("ix_chunks_search_vector", "search_vector", postgresql_using="gin"),
    )
