"""`python -m backend.modules.knowledge_base.reembed`: give every chunk a vector of the model the
settings name (EMBEDDING_PROVIDER, EMBEDDING_MODEL, EMBEDDING_DIM), in batches, while the API
serves.

It fills `chunks.embedding_next` while that column exists (a model change in progress: the
API keeps searching `embedding` with the old model), else `chunks.embedding` where it is NULL
(after the change's second revision, or the one-step form). Each batch is its own short
transaction; rows are taken with SKIP LOCKED, so two runs share the work, and a run stopped
half-way loses nothing: the next one continues where the vectors end. It passes over the table
again until a pass finds nothing left and (while filling `embedding_next`) no document is being
ingested, so chunks added meanwhile are included. Exit status 0
when every chunk has a vector, 1 (with the reason) when it cannot go on.

    python -m backend.modules.knowledge_base.reembed [--batch-size 256]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.core.config import SettingsError, get_settings
from backend.db.session import create_engine
from backend.modules.knowledge_base.embeddings import Embedder, create_embedder
from backend.modules.knowledge_base.exceptions import EmbeddingError
from backend.modules.knowledge_base.settings import KnowledgeBaseSettings

log = logging.getLogger(__name__)

NEXT_COLUMN = "embedding_next"
COLUMNS = ("embedding", NEXT_COLUMN)


class ReembedError(Exception):
    """Why the chunks cannot be re-embedded (the column, the model): a message for the operator."""


class ReembedSettings(KnowledgeBaseSettings):
    """The settings of the model being moved to: its dimension is checked against the column
    being filled (read from the database), not against the code's `EMBEDDING_DIM`."""

    def _check_column(self) -> Self:
        return self


@dataclass
class Progress:
    column: str
    embedded: int = 0


async def column_to_fill(engine: AsyncEngine) -> tuple[str, int]:
    """`embedding_next` while a model change is in progress, else `embedding`; with the
    dimension the column holds (pgvector keeps it as the type modifier)."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT attname, atttypmod FROM pg_attribute "
                    "WHERE attrelid = to_regclass('chunks') AND attname = ANY(:names) "
                    "AND NOT attisdropped"
                ),
                {"names": list(COLUMNS)},
            )
        ).all()
    found = {name: dimension for name, dimension in rows}
    for column in reversed(COLUMNS):
        if column in found:
            return column, found[column]
    raise ReembedError("There is no chunks.embedding column: run `alembic upgrade head` first")


async def reembed(
    engine: AsyncEngine,
    embedder: Embedder,
    *,
    batch_size: int = 256,
    report: Callable[[Progress], None] = lambda progress: None,
) -> Progress:
    """Embed every chunk missing a vector in the column to fill; `report` after each batch."""
    column, dimension = await column_to_fill(engine)
    if dimension != embedder.dimension:
        raise ReembedError(
            f"EMBEDDING_DIM is {embedder.dimension} but chunks.{column} holds vector({dimension}): "
            f"run with the settings of the model that column is for"
        )
    # The column name comes from COLUMNS above, never from input.
    take = text(
        f"SELECT id, text FROM chunks WHERE {column} IS NULL AND id > :after "
        f"ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED"
    )
    store = text(f"UPDATE chunks SET {column} = CAST(:vector AS real[])::vector WHERE id = :id")
    progress = Progress(column=column)
    waited = 0.0
    while True:
        found_any = False
        after = uuid.UUID(int=0)
        while True:
            async with engine.begin() as conn:
                rows = (await conn.execute(take, {"after": after, "limit": batch_size})).all()
                if not rows:
                    break
                vectors = await embedder.embed([row.text for row in rows])
                await conn.execute(
                    store,
                    [
                        {"id": row.id, "vector": vector}
                        for row, vector in zip(rows, vectors, strict=True)
                    ],
                )
            found_any = True
            after = rows[-1].id
            progress.embedded += len(rows)
            report(progress)
        if found_any:
            continue
        # A pass that took nothing ends the run only when no chunk lacks a vector: one committed
        # behind the pass's cursor (or held by another run) is taken by the next pass. While a
        # model change is in progress, documents being ingested (by the old model, into
        # `embedding`) will add chunks without the new vector: wait for them too (not forever:
        # with no worker running they never come; run `reembed` again once they have). Filling
        # `embedding` itself, the workers embed what they store.
        left = await _any_missing(engine, column) or (
            column == NEXT_COLUMN and await _ingestion_in_flight(engine)
        )
        if not left or waited >= IN_FLIGHT_MAX_WAIT_SECONDS:
            return progress
        await asyncio.sleep(IN_FLIGHT_POLL_SECONDS)
        waited += IN_FLIGHT_POLL_SECONDS


async def catch_up(engine: AsyncEngine, embedder: Embedder) -> None:
    """At start, where background work runs: chunks of `embedding` without a vector (after a
    model change's second release, or an interrupted run) get one while the API serves. Nothing
    while a model change is in progress: its `reembed` runs with the new model's settings."""
    try:
        column, _ = await column_to_fill(engine)
        if column == NEXT_COLUMN:
            return
        progress = await reembed(engine, embedder)
    except (ReembedError, EmbeddingError, SQLAlchemyError, OSError) as exc:
        log.warning("chunks without a vector were not embedded: %s", exc)
        return
    if progress.embedded:
        log.info("embedded %d chunks that had no vector", progress.embedded)


# While documents are queued or being processed (due now), `reembed` waits for their chunks.
IN_FLIGHT_POLL_SECONDS = 0.5
IN_FLIGHT_MAX_WAIT_SECONDS = 120.0


async def _any_missing(engine: AsyncEngine, column: str) -> bool:
    async with engine.connect() as conn:
        # The column name comes from COLUMNS, never from input.
        found = await conn.scalar(
            text(f"SELECT EXISTS (SELECT FROM chunks WHERE {column} IS NULL)")
        )
    return bool(found)


async def _ingestion_in_flight(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        found = await conn.scalar(
            text(
                "SELECT EXISTS (SELECT FROM documents WHERE status IN ('pending', 'processing') "
                "AND run_after <= now())"
            )
        )
    return bool(found)


async def _main(batch_size: int) -> int:
    try:
        settings = ReembedSettings.load()
        engine = create_engine(get_settings())
    except SettingsError as exc:
        print(f"reembed: {exc}", file=sys.stderr)
        return 1
    embedder = create_embedder(settings)
    started = time.perf_counter()

    def report(progress: Progress) -> None:
        rate = progress.embedded / max(time.perf_counter() - started, 1e-9)
        print(f"reembed: {progress.embedded} chunks into {progress.column} ({rate:.0f}/s)")

    try:
        progress = await reembed(engine, embedder, batch_size=batch_size, report=report)
    except (ReembedError, EmbeddingError) as exc:
        print(f"reembed: {exc}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        print(f"reembed: the database failed: {exc}", file=sys.stderr)
        return 1
    finally:
        await embedder.aclose()
        await engine.dispose()
    took = time.perf_counter() - started
    print(
        f"reembed: {progress.embedded} chunks embedded into {progress.column} in {took:.1f} s; "
        "every chunk has a vector"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend.modules.knowledge_base.reembed")
    parser.add_argument("--batch-size", type=int, default=256, help="chunks per transaction")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    return asyncio.run(_main(args.batch_size))


if __name__ == "__main__":
    sys.exit(main())
