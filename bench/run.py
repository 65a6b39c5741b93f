"""Benchmarks: the API against a raw asyncpg baseline, search, uploads, ingestion, migrations.

    python3 dev.py bench              # full run (about 15 minutes): bench/results/latest.*
    python3 dev.py bench --size tiny  # seconds; what the test suite runs

Every figure is measured in this run on this machine; the ones that matter are ratios against a
baseline measured beside them. With two or more cores, the server under test is pinned to core 0
and the load generator (wrk) and PostgreSQL to core 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import statistics
import sys
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import URL, make_url

from backend.core.config import PROJECT_ROOT
from backend.db.embedded import embedded_database_url
from bench import report, vectors
from bench.api import api_throughput
from bench.db import alembic_upgrade, create_database, drop_database, dsn, scratch_database
from bench.load import ensure_wrk
from bench.processes import LOAD_CORE, MULTI_CORE, SERVER_CORE, pin_postgres, start_server
from bench.seed import seed
from bench.sizes import SIZES, Size
from bench.transfers import index_cost, ingestion, transfers

RESULTS = PROJECT_ROOT / "bench" / "results"


API_DATABASE = "bench_api"


async def prepare_api_database(server: URL, size: Size) -> tuple[URL, dict[str, Any]]:
    """Migration timings: empty -> head on fresh databases, then the no-op upgrade at head.

    The last database migrated is the one the API benchmark runs on.
    """
    empty_runs = []
    for _ in range(size.migration_runs - 1):
        async with scratch_database(server, "bench_migrations") as scratch:
            empty_runs.append(alembic_upgrade(scratch))
    url = await create_database(server, API_DATABASE)
    empty_runs.append(alembic_upgrade(url))
    noop_runs = [alembic_upgrade(url) for _ in range(max(2, size.migration_runs + 2))]
    return url, {
        "empty_to_head_s": statistics.median(empty_runs),
        "noop_at_head_s": statistics.median(noop_runs),
        "runs": {"empty": empty_runs, "noop": noop_runs},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=SIZES, default="full")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where latest.md/.png go")
    parser.add_argument(
        "--server-url",
        help="a PostgreSQL server to create bench databases on (default: an embedded one in "
        ".data/postgres-bench, pinned to its own core)",
    )
    args = parser.parse_args()
    size = SIZES[args.size]
    ensure_wrk()

    if args.server_url:
        server = make_url(args.server_url)
        postgres_pinned = False
    else:
        pgdata = PROJECT_ROOT / ".data" / "postgres-bench"
        server = make_url(embedded_database_url(pgdata))
        postgres_pinned = pin_postgres(pgdata)
    if MULTI_CORE:
        os.sched_setaffinity(0, {int(LOAD_CORE)})
    setup = {
        "size": size.name,
        "cores": os.cpu_count(),
        "pinned": MULTI_CORE,
        "postgres_pinned": postgres_pinned,
        "python": sys.version.split()[0],
        "duration_s": size.duration,
        "repetitions": size.repetitions,
        "connections": size.connections,
    }
    print(f"bench ({size.name}): {setup}", flush=True)

    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-{uuid.uuid4().hex[:8]}"
    workdir.mkdir(parents=True)
    results: dict[str, Any] = {"setup": setup}
    url: URL | None = None
    try:
        print("migrations", flush=True)
        url, results["migrations"] = asyncio.run(prepare_api_database(server, size))
        env = {
            **os.environ,
            "DATABASE_URL": dsn(url),
            "JWT_SECRET": secrets.token_urlsafe(48),
            "ENVIRONMENT": "production",
            "FILE_STORAGE_DIR": str(workdir / "files"),
            "MAX_UPLOAD_BYTES": str((size.upload_mb + 16) * 1024 * 1024),
            "MAX_DOCUMENT_BYTES": str(int((size.document_mb + 1) * 1024 * 1024)),
        }
        env.pop("TEST_DATABASE_URL", None)

        print("start-up", flush=True)
        startups = []
        for _ in range(size.startup_runs):
            probe = start_server("backend.main:app", env, "/readyz")
            startups.append(probe.ready_after)
            probe.stop()
        results["startup"] = {"to_ready_s": statistics.median(startups), "runs": startups}

        with ExitStack() as servers:
            app = start_server("backend.main:app", env, "/readyz")
            servers.callback(app.stop)
            baseline = start_server("bench.baseline:app", env, "/healthz")
            servers.callback(baseline.stop)
            with httpx.Client(base_url=app.base_url, timeout=120) as client:
                seeded = seed(client)
            print("API throughput", flush=True)
            results["api"] = api_throughput(app, baseline, seeded, size, workdir)
            print("uploads", flush=True)
            results["transfers"] = transfers(app, seeded, size, workdir)
            print("ingestion", flush=True)
            results["ingestion"] = ingestion(app, seeded, size)
            results["ingestion"] |= asyncio.run(index_cost(url, results["ingestion"]["chunks"]))

        print("vector search", flush=True)
        if MULTI_CORE:
            os.sched_setaffinity(0, {int(SERVER_CORE)})
        results["vectors"] = asyncio.run(vectors.run(server, size.vectors))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if url is not None:
            asyncio.run(drop_database(server, API_DATABASE))

    args.out.mkdir(parents=True, exist_ok=True)
    report.write(results, args.out)
    print(f"wrote {args.out / 'latest.md'} and {args.out / 'latest.png'}")


if __name__ == "__main__":
    main()
