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
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np
from pgvector.asyncpg import register_vector
from sqlalchemy.engine import URL, make_url

from backend.core.config import PROJECT_ROOT
from backend.db.embedded import embedded_database_url
from backend.modules.knowledge_base.models import EMBEDDING_DIM
from bench import report, vectors
from bench.db import alembic_upgrade, create_database, drop_database, dsn, scratch_database
from bench.load import Endpoint, WrkResult, ensure_wrk, wrk

RESULTS = PROJECT_ROOT / "bench" / "results"
PYTHON = sys.executable
MULTI_CORE = (os.cpu_count() or 1) >= 2
SERVER_CORE, LOAD_CORE = "0", "1"


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
    "full": Size("full", 10, 3, 16, 200, 4.0, 3, 3, vectors.FULL),
}


def pinned(core: str, command: list[str]) -> list[str]:
    return ["taskset", "-c", core, *command] if MULTI_CORE else command


# --- the database server ------------------------------------------------------------------------


def pin_postgres(pgdata: Path) -> bool:
    """Pin the postmaster and its children (and so every backend it forks) to LOAD_CORE."""
    if not MULTI_CORE:
        return False
    postmaster = (pgdata / "postmaster.pid").read_text().split()[0]
    children = subprocess.run(
        ["pgrep", "-P", postmaster], capture_output=True, text=True, check=False
    ).stdout.split()
    for pid in [postmaster, *children]:
        subprocess.run(["taskset", "-a", "-p", "-c", LOAD_CORE, pid], capture_output=True)
    return True


# --- processes ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    ready_after: float

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


def start_server(app: str, env: dict[str, str], ready_path: str) -> Server:
    """uvicorn, one worker pinned to SERVER_CORE, no access log; waits for `ready_path` 200."""
    port = free_port()
    command = [PYTHON, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    started = time.perf_counter()
    process = subprocess.Popen(
        pinned(SERVER_CORE, [*command, "--no-access-log", "--log-level", "warning"]),
        cwd=PROJECT_ROOT,
        env=env,
    )
    base_url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base_url) as client:
        while True:
            if process.poll() is not None:
                raise SystemExit(f"{app} exited with {process.returncode} before it was ready")
            try:
                if client.get(ready_path, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.perf_counter() - started > 60:
                process.kill()
                raise SystemExit(f"{app} was not ready on {ready_path} within 60 s")
            time.sleep(0.01)
    return Server(process, base_url, time.perf_counter() - started)


# --- seeding through the API --------------------------------------------------------------------


@dataclass
class Seed:
    token: str
    kb_id: str


def seed(client: httpx.Client) -> Seed:
    account = {"email": "bench@example.com", "username": "bench", "password": "bench-password"}
    client.post("/api/v1/auth/register", json=account).raise_for_status()
    login = client.post(
        "/api/v1/auth/token", data={"username": account["email"], "password": account["password"]}
    )
    login.raise_for_status()
    token = login.json()["access_token"]
    client.headers["Authorization"] = f"Bearer {token}"
    for n in range(25):  # more than a page of 20
        client.post(
            "/api/v1/files", files={"file": (f"note-{n}.txt", f"note {n}\n".encode() * 50)}
        ).raise_for_status()
    kb = client.post("/api/v1/knowledge-bases", json={"name": "handbook"})
    kb.raise_for_status()
    client.post(
        f"/api/v1/knowledge-bases/{kb.json()['id']}/documents",
        json={"title": "handbook", "text": markdown(30_000)},
    ).raise_for_status()
    return Seed(token, kb.json()["id"])


WORDS = [
    "migration",
    "replica",
    "database",
    "schema",
    "index",
    "vector",
    "search",
    "upgrade",
    "rollback",
    "deploy",
]


def markdown(chars: int) -> str:
    """A long markdown document: headings and paragraphs of varied words."""
    out: list[str] = []
    size = n = 0
    while size < chars:
        if n % 8 == 0:
            out.append(f"\n## Section {n // 8}\n")
        words = [WORDS[(n * 7 + i * 3) % len(WORDS)] for i in range(60)]
        paragraph = " ".join(words).capitalize() + f" (paragraph {n}).\n"
        out.append(paragraph)
        size += len(paragraph) + 14
        n += 1
    return "".join(out)[:chars]


# --- API throughput -----------------------------------------------------------------------------


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


# --- uploads, downloads, ingestion --------------------------------------------------------------


@contextmanager
def peak_rss(server: Server) -> Iterator[dict[str, int]]:
    """Sample the server's resident memory every 5 ms; yields {"before", "peak"} in bytes."""
    sample = {"before": server.rss_bytes(), "peak": 0}
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            sample["peak"] = max(sample["peak"], server.rss_bytes())
            time.sleep(0.005)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield sample
    finally:
        done.set()
        thread.join()
        sample["peak"] = max(sample["peak"], server.rss_bytes())


def transfers(app: Server, seed: Seed, size: Size, workdir: Path) -> dict[str, Any]:
    total = size.upload_mb * 1024 * 1024
    source = workdir / "big.bin"
    with source.open("wb") as out:
        block = os.urandom(1024 * 1024)
        for _ in range(size.upload_mb):
            out.write(block)
    headers = {"Authorization": f"Bearer {seed.token}"}
    with httpx.Client(base_url=app.base_url, timeout=300, headers=headers) as client:
        with peak_rss(app) as upload_memory, source.open("rb") as stream:
            started = time.perf_counter()
            response = client.post("/api/v1/files", files={"file": ("big.bin", stream)})
            upload_seconds = time.perf_counter() - started
        response.raise_for_status()
        file_id = response.json()["id"]
        received = 0
        with peak_rss(app) as download_memory:
            started = time.perf_counter()
            with client.stream("GET", f"/api/v1/files/{file_id}/content") as download:
                for piece in download.iter_raw(1024 * 1024):
                    received += len(piece)
            download_seconds = time.perf_counter() - started
        assert received == total, f"downloaded {received} of {total} bytes"
    source.unlink()
    mib = total / 1024 / 1024
    return {
        "size_mb": size.upload_mb,
        "upload_mb_s": mib / upload_seconds,
        "download_mb_s": mib / download_seconds,
        "upload_peak_growth_mb": (upload_memory["peak"] - upload_memory["before"]) / 1024 / 1024,
        "download_peak_growth_mb": (download_memory["peak"] - download_memory["before"])
        / 1024
        / 1024,
    }


def ingestion(app: Server, seed: Seed, size: Size) -> dict[str, Any]:
    text = markdown(int(size.document_mb * 1024 * 1024))
    headers = {"Authorization": f"Bearer {seed.token}"}
    with httpx.Client(base_url=app.base_url, timeout=600, headers=headers) as client:
        kb = client.post("/api/v1/knowledge-bases", json={"name": "ingestion"})
        kb.raise_for_status()
        upload = client.post(
            "/api/v1/files", files={"file": ("book.md", text.encode(), "text/markdown")}
        )
        upload.raise_for_status()
        started = time.perf_counter()
        document = client.post(
            f"/api/v1/knowledge-bases/{kb.json()['id']}/documents",
            json={"file_id": upload.json()["id"]},
        )
        seconds = time.perf_counter() - started
        document.raise_for_status()
    chunks = document.json()["chunk_count"]
    return {
        "document_mb": len(text) / 1024 / 1024,
        "chunks": chunks,
        "seconds": seconds,
        "chunks_per_s": chunks / seconds,
    }


async def index_cost(url: URL, rows: int) -> dict[str, float]:
    """Where ingestion time goes: `rows` random chunks by COPY, with and without the HNSW index.

    Each in a transaction that is rolled back, so the database is left as it was.
    """
    connection = await asyncpg.connect(dsn(url))
    try:
        await register_vector(connection)
        kb, document = await connection.fetchrow(
            "SELECT knowledge_base_id, id FROM documents LIMIT 1"
        )
        vectors = np.random.default_rng(1).standard_normal((rows, EMBEDDING_DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        records = [(uuid.uuid4(), document, kb, n, "x" * 900, v) for n, v in enumerate(vectors)]
        columns = ["id", "document_id", "knowledge_base_id", "ordinal", "text", "embedding"]
        seconds = {}
        for label, drop in (("with_index_s", False), ("without_index_s", True)):
            transaction = connection.transaction()
            await transaction.start()
            if drop:
                await connection.execute("DROP INDEX ix_chunks_embedding_hnsw")
            started = time.perf_counter()
            await connection.copy_records_to_table("chunks", records=records, columns=columns)
            seconds[label] = time.perf_counter() - started
            await transaction.rollback()
    finally:
        await connection.close()
    return seconds


# --- the run ------------------------------------------------------------------------------------


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
