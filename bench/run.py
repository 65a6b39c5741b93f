"""Benchmarks: the API against a raw asyncpg baseline, search, uploads, ingestion, migrations.

    python3 dev.py bench              # full run (about 45 minutes): bench/results/latest.*
    python3 dev.py bench --size quick # the API against the baseline; logs and metrics: 5 min
    python3 dev.py bench --size tiny  # seconds; what the test suite runs

Every figure is measured in this run on this machine; the ones that matter are ratios against a
baseline measured beside them. With two or more cores, the server under test is pinned to core 0
and the load generator (wrk) and PostgreSQL to core 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import URL, make_url

from backend.core.config import PROJECT_ROOT
from backend.db.embedded import embedded_database_url
from bench import report
from bench.api import api_throughput, endpoints, observability_cost
from bench.db import alembic_upgrade, create_database, drop_database, dsn, scratch_database
from bench.layers import cpu_by_layer
from bench.load import ensure_wrk
from bench.middleware import middleware_cost
from bench.mixed import CONNECTIONS, mixed_load
from bench.modules import Context, mounted, sections
from bench.processes import LOAD_CORE, MULTI_CORE, Server, pin_postgres, start_server
from bench.seed import Seed, log_in
from bench.sizes import SIZES, Size

RESULTS = PROJECT_ROOT / "bench" / "results"
# Calls per round of the in-process middleware measurement.
MIDDLEWARE_CALLS = {"tiny": 2_000, "quick": 20_000, "full": 20_000}


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


def app_env(url: URL, size: Size, workdir: Path) -> dict[str, str]:
    """The app's environment: production settings on the bench database."""
    env = {
        **os.environ,
        "DATABASE_URL": dsn(url),
        "JWT_SECRET": secrets.token_urlsafe(48),
        "ENVIRONMENT": "production",
    }
    for part in mounted().values():
        env |= part.app_env(size, workdir)
    if size.pool_timeout is not None:
        env["DB_POOL_TIMEOUT"] = str(size.pool_timeout)
    env.pop("TEST_DATABASE_URL", None)
    return env


@contextmanager
def app_and_baseline(env: dict[str, str], size: Size) -> Iterator[tuple[Server, Server, Seed]]:
    """The app and the raw baseline served side by side, with the API's data seeded."""
    with ExitStack() as servers:
        app = start_server("backend.main:app", env, "/readyz")
        servers.callback(app.stop)
        baseline = start_server("bench.baseline:app", env, "/healthz")
        servers.callback(baseline.stop)
        with httpx.Client(base_url=app.base_url, timeout=120) as client:
            seeded = log_in(client)
            for name, part in mounted().items():
                seeded.data[name] = part.seed(client, size)
        yield app, baseline, seeded


def quick(server: URL, size: Size, workdir: Path, overrides: dict[str, str]) -> None:
    """The API against the baseline only, printed: run it before merging a plumbing change."""
    url = asyncio.run(create_database(server, API_DATABASE))
    try:
        alembic_upgrade(url)
        env = app_env(url, size, workdir) | overrides
        with app_and_baseline(env, size) as (app, baseline, seeded):
            rows = api_throughput(app, baseline, seeded, size, workdir)
            print("observability cost", flush=True)
            observability_cost(baseline, endpoints(seeded)[0], env, size, workdir)
    finally:
        asyncio.run(drop_database(server, API_DATABASE))
    print(
        "\n| endpoint | req/s ratio | p99 ratio (fixed rate) | CPU per request, app / baseline |"
        "\n| --- | ---: | ---: | ---: |"
    )
    for row in rows:
        print(
            f"| `{row['endpoint']}` | {row['ratio']:.2f}x | {row['p99_ratio']:.2f}x | "
            f"{row['app']['cpu_us']:.0f} / {row['baseline']['cpu_us']:.0f} us |"
        )


def everything(server: URL, size: Size, workdir: Path, results: dict[str, Any]) -> None:
    url: URL | None = None
    try:
        print("migrations", flush=True)
        url, results["migrations"] = asyncio.run(prepare_api_database(server, size))
        env = app_env(url, size, workdir)

        print("start-up", flush=True)
        startups = []
        for _ in range(size.startup_runs):
            probe = start_server("backend.main:app", env, "/readyz")
            startups.append(probe.ready_after)
            probe.stop()
        results["startup"] = {"to_ready_s": statistics.median(startups), "runs": startups}

        with app_and_baseline(env, size) as (app, baseline, seeded):
            print("API throughput", flush=True)
            results["api"] = api_throughput(app, baseline, seeded, size, workdir)
            results["seed"] = seeded.data
            measured = endpoints(seeded)[:4]
            print("observability cost", flush=True)
            results["observability"] = observability_cost(baseline, measured[0], env, size, workdir)
            results["middleware_us"] = middleware_cost(MIDDLEWARE_CALLS[size.name])
            cpu_us = {row["endpoint"]: row["app"]["cpu_us"] for row in results["api"]}
            if size.profile_seconds:
                print("CPU by layer", flush=True)
                results["layers"] = cpu_by_layer(app, measured, cpu_us, size, workdir)
            if size.mixed_seconds:
                print(f"mixed load ({CONNECTIONS} connections)", flush=True)
                results["mixed"] = mixed_load(env, seeded, size, workdir)
            context = Context(server, url, app, env, seeded, size, workdir)
            for part in mounted().values():
                results |= part.measure(context, part.SECTIONS)
    finally:
        if url is not None:
            asyncio.run(drop_database(server, API_DATABASE))


def again(only: list[str], server: URL, size: Size, workdir: Path, results: dict[str, Any]) -> None:
    """Measure some sections again (`--only`), on a database seeded as for the whole run."""
    url = asyncio.run(create_database(server, API_DATABASE))
    try:
        alembic_upgrade(url)
        env = app_env(url, size, workdir)
        with app_and_baseline(env, size) as (app, baseline, seeded):
            if "observability" in only:
                print("observability cost", flush=True)
                endpoint = endpoints(seeded)[0]
                results["observability"] = observability_cost(
                    baseline, endpoint, env, size, workdir
                )
                results["middleware_us"] = middleware_cost(MIDDLEWARE_CALLS[size.name])
            if "mixed" in only:
                print(f"mixed load ({CONNECTIONS} connections)", flush=True)
                results["mixed"] = mixed_load(env, seeded, size, workdir)
            context = Context(server, url, app, env, seeded, size, workdir)
            for part in mounted().values():
                results |= part.measure(context, only)
    finally:
        asyncio.run(drop_database(server, API_DATABASE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=SIZES, default="full")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where latest.md/.png go")
    parser.add_argument(
        "--server-url",
        help="a PostgreSQL server to create bench databases on (default: an embedded one in "
        ".data/postgres-bench, pinned to its own core)",
    )
    parser.add_argument(
        "--app-env",
        action="append",
        default=[],
        type=lambda item: tuple(item.split("=", 1)),
        metavar="NAME=VALUE",
        help="a setting for the app under test (--size quick), e.g. AUTH_CACHE_SECONDS=0",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=["observability", "mixed", *sections()],
        help="measure this section again and rewrite the report (the rest from latest.json); "
        "repeatable",
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
    try:
        if size.name == "quick":
            quick(server, size, workdir, dict(args.app_env))
            return
        if args.only:
            results = json.loads((args.out / "latest.json").read_text())
            again(args.only, server, size, workdir, results)
        else:
            everything(server, size, workdir, results)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    args.out.mkdir(parents=True, exist_ok=True)
    report.write(results, args.out)
    print(f"wrote {args.out / 'latest.md'} and {args.out / 'latest.png'}")


if __name__ == "__main__":
    main()
