"""The app against the raw baseline, endpoint by endpoint, under wrk."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bench.load import Endpoint, WrkResult, wrk
from bench.processes import LOAD_CORE, Server, pinned
from bench.seed import Seed
from bench.sizes import Size


def endpoints(seed: Seed) -> list[Endpoint]:
    auth = {"Authorization": f"Bearer {seed.token}"}
    return [
        Endpoint("GET /api/v1/users/me", "GET", "/api/v1/users/me", auth),
        Endpoint("GET /api/v1/files", "GET", "/api/v1/files", auth),
        Endpoint(
            "POST /api/v1/knowledge-bases/{id}/search",
            "POST",
            f"/api/v1/knowledge-bases/{seed.kb_id}/search",
            {**auth, "Content-Type": "application/json"},
            '{"query": "rollback a migration on a replica", "top_k": 5}',
        ),
        Endpoint("GET /healthz", "GET", "/healthz", {}),
    ]


def api_throughput(
    app: Server, baseline: Server, seed: Seed, size: Size, workdir: Path
) -> list[dict[str, Any]]:
    rows = []
    for endpoint in endpoints(seed):
        for server in (app, baseline):  # warm-up: caches, prepared statements, the pool
            wrk(server.base_url, endpoint, 1, size.connections, workdir, pinned(LOAD_CORE, []))
        runs: dict[str, list[WrkResult]] = {"app": [], "baseline": []}
        for rep in range(size.repetitions):
            order = [("app", app), ("baseline", baseline)]
            for side, server in order if rep % 2 == 0 else order[::-1]:
                result = wrk(
                    server.base_url,
                    endpoint,
                    size.duration,
                    size.connections,
                    workdir,
                    pinned(LOAD_CORE, []),
                )
                runs[side].append(result)
        row: dict[str, Any] = {"endpoint": endpoint.name}
        for side, results in runs.items():
            row[side] = {
                "rps": statistics.median(r.rps for r in results),
                "p50_ms": statistics.median(r.p50_ms for r in results),
                "p99_ms": statistics.median(r.p99_ms for r in results),
                "runs": [round(r.rps) for r in results],
            }
        row["ratio"] = row["app"]["rps"] / row["baseline"]["rps"]
        row["p99_ratio"] = row["app"]["p99_ms"] / row["baseline"]["p99_ms"]
        rows.append(row)
        print(
            f"  {endpoint.name}: app {row['app']['rps']:.0f} req/s, "
            f"baseline {row['baseline']['rps']:.0f} req/s, ratio {row['ratio']:.2f}",
            flush=True,
        )
    return rows
