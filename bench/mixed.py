"""A mixed load: what an agent service's traffic looks like, 64 connections, a minute, with 1, 2
and 4 uvicorn workers against one database.

Reads dominate (the caller, file listings, searches), with uploads and new documents (queued,
and ingested by the in-process worker meanwhile) mixed in. Reports throughput, p50/p99 per
endpoint, errors (none allowed; by endpoint and status when there are) and the server's
resident memory every second (all workers together).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.client import closed_loop, no_collector_pauses
from bench.load import Endpoint
from bench.processes import Server, start_server
from bench.seed import Seed
from bench.sizes import Size

CONNECTIONS = 64
BOUNDARY = "benchboundary7MA4YWxkTrZu0gW"


def mix(seed: Seed) -> list[tuple[float, Endpoint | Callable[[], Endpoint]]]:
    """(weight, request or a function making a fresh one) for each kind of request."""
    auth = {"Authorization": f"Bearer {seed.token}"}
    as_json = {**auth, "Content-Type": "application/json"}
    counter = itertools.count()

    def search(kb: str, name: str) -> Endpoint:
        body = {"query": random.choice(QUERIES), "top_k": 5}
        path = f"/api/v1/knowledge-bases/{kb}/search"
        return Endpoint(name, "POST", path, as_json, json.dumps(body))

    def upload() -> Endpoint:
        n = next(counter)
        content = f"mixed load file {n}\n" * 800  # ~16 kB
        body = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="mixed-{n}.txt"\r\nContent-Type: text/plain\r\n\r\n'
            f"{content}\r\n--{BOUNDARY}--\r\n"
        )
        headers = {**auth, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
        return Endpoint("POST /api/v1/files", "POST", "/api/v1/files", headers, body)

    def document() -> Endpoint:
        n = next(counter)
        text = " ".join(random.choice(QUERIES) for _ in range(60)) + f" (note {n})"
        body = json.dumps({"title": f"note {n}", "text": text})
        path = f"/api/v1/knowledge-bases/{seed.kb_id}/documents"
        return Endpoint("POST .../documents (~4 kB)", "POST", path, as_json, body)

    return [
        (20, Endpoint("GET /api/v1/users/me", "GET", "/api/v1/users/me", auth)),
        (20, Endpoint("GET /api/v1/files", "GET", "/api/v1/files", auth)),
        (10, Endpoint("GET /api/v1/files/{id}", "GET", f"/api/v1/files/{seed.file_id}", auth)),
        (25, lambda: search(seed.kb_id, "POST .../search (exact)")),
        (10, lambda: search(seed.large_kb_id, "POST .../search (HNSW)")),
        (8, upload),
        (5, document),
        (2, Endpoint("GET /healthz", "GET", "/healthz")),
    ]


QUERIES = [
    "rollback a migration on a replica",
    "how do I deploy a schema upgrade",
    "vector index search settings",
    "database replica rollback",
    "upgrade the deploy pipeline",
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
