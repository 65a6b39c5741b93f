"""How much the bench does: `tiny` (seconds, what the test suite runs), `quick` (the API
against the baseline only, a minute or two) or `full`."""

from __future__ import annotations

from dataclasses import dataclass


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
    latency_seconds: float  # at a fixed rate, per server and endpoint
    large_documents: int  # of 800 kB in the large knowledge base
    mixed_seconds: int  # the mixed load, per worker count; 0 skips it
    mixed_workers: tuple[int, ...]
    profile_seconds: int  # py-spy per endpoint for the CPU-by-layer table; 0 skips it
    # DB_POOL_TIMEOUT for the app, when not the default (3 s). The tiny size runs inside the test
    # suite, beside other tests on the same cores: a request can then wait longer than 3 s for a
    # pooled connection and get a 503, which says nothing about the code under test.
    pool_timeout: float | None = None
    # Worker processes the ingestion section measures together, run by run.
    ingestion_workers: tuple[int, ...] = (1, 2, 4)
    # A second of load on each server before an endpoint's measured runs (the tiny size, a
    # smoke test whose figures mean nothing, goes without).
    warm_up: bool = True


SIZES = {
    "tiny": Size(
        "tiny",
        1,
        1,
        8,
        8,
        0.1,
        1,
        1,
        1,
        2,
        3,
        (1,),
        0,
        pool_timeout=30.0,
        ingestion_workers=(1,),
        warm_up=False,
    ),
    "quick": Size("quick", 4, 3, 16, 8, 0.1, 1, 1, 4, 4, 0, (), 0),
    "full": Size("full", 10, 3, 16, 200, 4.0, 3, 3, 10, 4, 60, (1, 2, 4), 6),
}
