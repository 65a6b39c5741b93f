"""How much the bench does: `tiny` (seconds, what the test suite runs), `quick` (the API
against the baseline only, a minute or two) or `full`."""

from __future__ import annotations

from dataclasses import dataclass

from bench import vectors


@dataclass(frozen=True)
class Size:
    name: str
    duration: int  # seconds per wrk run
    repetitions: int
    connections: int
    upload_mb: int
    document_mb: float
    migration_runs: int
    startup_runs: int
    vectors: vectors.VectorSize


SIZES = {
    "tiny": Size("tiny", 1, 1, 8, 8, 0.1, 1, 1, vectors.TINY),
    "quick": Size("quick", 4, 3, 16, 8, 0.1, 1, 1, vectors.TINY),
    "full": Size("full", 10, 3, 16, 200, 4.0, 3, 3, vectors.FULL),
}
