"""A mixed load: what an agent service's traffic looks like, 64 connections, a minute, with 1, 2
and 4 uvicorn workers against one database.

Reads dominate (the caller, file listings, searches), with uploads and new documents (queued,
and ingested by the in-process worker meanwhile) mixed in. Reports throughput, p50/p99 per
endpoint, errors (none allowed; by endpoint and status when there are) and the server's
resident memory every second (all workers together).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.client import closed_loop, no_collector_pauses
from bench.load import Endpoint
from bench.modules import Weighted, mounted
from bench.processes import Server, start_server
from bench.seed import Seed
from bench.sizes import Size

CONNECTIONS = 64


def mix(seed: Seed) -> list[Weighted]:
    """(weight, request or a function making a fresh one) for each kind of request: the
    caller's own record, each module's share (bench/modules/), the liveness probe."""
    return [
        (20, Endpoint("GET /api/v1/users/me", "GET", "/api/v1/users/me", seed.auth)),
        *(kind for part in mounted().values() for kind in part.mix(seed)),
        (2, Endpoint("GET /healthz", "GET", "/healthz")),
    ]


def picker(seed: Seed) -> Callable[[], Endpoint]:
    kinds = mix(seed)
    weights = [w for w, _ in kinds]

    def pick() -> Endpoint:
        [(_, kind)] = random.choices(kinds, weights)
        return kind if isinstance(kind, Endpoint) else kind()

    return pick


def mixed_load(env: dict[str, str], seed: Seed, size: Size, workdir: Path) -> list[dict[str, Any]]:
    rows = []
    for workers in size.mixed_workers:
        server = start_server("backend.main:app", env, "/readyz", workers=workers)
        memory: list[tuple[float, float]] = []

        def sample_memory(
            elapsed: float, server: Server = server, memory: list[tuple[float, float]] = memory
        ) -> None:
            memory.append((elapsed, server.rss_bytes() / 2**20))

        try:
            with no_collector_pauses():
                latencies, took = asyncio.run(
                    closed_loop(
                        server.base_url,
                        picker(seed),
                        CONNECTIONS,
                        size.mixed_seconds,
                        on_tick=sample_memory,
                    )
                )
        finally:
            server.stop()
        names = sorted(latencies.seconds)
        per = {name: latencies.summary(name, took) for name in names}
        total = sum(p["requests"] for p in per.values())
        errors = sum(p["errors"] for p in per.values())
        third = max(1, len(memory) // 3)
        row = {
            "workers": workers,
            "seconds": took,
            "rps": total / took,
            "errors": errors,
            "failures": {name: dict(by_status) for name, by_status in latencies.failures.items()},
            "endpoints": per,
            "memory_mb": memory,
            "memory_first_third_mb": sum(m for _, m in memory[:third]) / third,
            "memory_last_third_mb": sum(m for _, m in memory[-third:]) / third,
        }
        rows.append(row)
        print(
            f"  {workers} worker(s): {row['rps']:.0f} req/s, {errors} errors, memory "
            f"{row['memory_first_third_mb']:.0f} -> {row['memory_last_third_mb']:.0f} MB",
            flush=True,
        )
        if errors:
            # Recorded, not fatal: the report marks the target missed, and a long run keeps
            # everything else it measured.
            print(f"  {workers} worker(s): errors by endpoint and status {row['failures']}")
    return rows
