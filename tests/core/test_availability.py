"""Slow and hostile clients against a real server: the API stays available to everyone else.

Real uvicorn processes, real sockets on loopback, bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import statistics
import time
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine

from backend.core.config import PROJECT_ROOT
from tests.modules.user.factories import PASSWORD, account_at
from tests.support import db
from tests.support.files import files_in
from tests.support.server import uvicorn_process, uvicorn_server

pytestmark = [pytest.mark.slow]

API = "/api/v1"
BOUNDARY = "templatetestboundary"


async def trickle_upload(
    base: str, auth: dict[str, str], *, size: int, pieces: int, pause: float, stall: bool = False
) -> tuple[int, bytes]:
    """A multipart upload sent `pieces` at a time with `pause` between; `stall` stops halfway."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="slow.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    body = head + b"x" * size + tail
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    request = (
        f"POST {API}/files HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: {auth['Authorization']}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    writer.write(request)
    step = len(body) // pieces + 1
    for n, start in enumerate(range(0, len(body), step)):
        if stall and n == pieces // 2:
            break
        writer.write(body[start : start + step])
        await writer.drain()
        await asyncio.sleep(pause)
    response = await reader.read()
    writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def test_slow_uploads_do_not_starve_other_requests(migrated_db: URL, tmp_path: Path) -> None:
    storage = tmp_path / "files"
    async with uvicorn_server(
        migrated_db, storage, DB_POOL_SIZE="2", REQUEST_BODY_IDLE_TIMEOUT="2"
    ) as base:
        auth = await account_at(base, "slowpoke")
        reader = await account_at(base, "reader")
        # Four uploads trickle for ~3 s each: twice the pool, if each held a connection.
        uploads = [
            asyncio.create_task(trickle_upload(base, auth, size=40_000, pieces=12, pause=0.25))
            for _ in range(4)
        ]
        await asyncio.sleep(0.5)
        async with httpx.AsyncClient(base_url=f"{base}{API}", timeout=10) as client:
            slowest = 0.0
            for _ in range(6):
                started = time.monotonic()
                me = await client.get("/users/me", headers=reader)
                slowest = max(slowest, time.monotonic() - started)
                assert me.status_code == 200, me.text
                await asyncio.sleep(0.2)
        results = await asyncio.gather(*uploads)

    assert [status for status, _ in results] == [201] * 4
    # Each read waited for nothing: no upload held one of the two connections.
    assert slowest < 1.0, f"a read waited {slowest:.2f}s behind slow uploads"
    assert len(files_in(storage)) == 4


async def test_a_stalled_upload_is_cut_off_and_leaves_nothing(
    migrated_db: URL, tmp_path: Path
) -> None:
    storage = tmp_path / "files"
    async with uvicorn_server(migrated_db, storage, REQUEST_BODY_IDLE_TIMEOUT="1") as base:
        auth = await account_at(base, "staller")
        started = time.monotonic()
        status, body = await asyncio.wait_for(
            trickle_upload(base, auth, size=100_000, pieces=10, pause=0.05, stall=True), 20
        )
        elapsed = time.monotonic() - started

    assert status == 408
    assert b"stalled" in body
    assert elapsed < 10
    assert files_in(storage) == []
    rows = await db.fetch_all(migrated_db, "SELECT count(*) FROM files")
    assert rows == [(0,)]


async def test_a_client_leaving_mid_upload_is_a_499_with_no_traceback(
    migrated_db: URL, tmp_path: Path
) -> None:
    storage = tmp_path / "files"
    async with uvicorn_process(migrated_db, storage) as (base, _):
        auth = await account_at(base, "leaver")
        host, port = base.removeprefix("http://").split(":")
        _, writer = await asyncio.open_connection(host, int(port))
        head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        writer.write(
            f"POST {API}/files HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: {auth['Authorization']}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            "Content-Length: 1000000\r\n\r\n".encode()
            + head
            + b"x" * 50_000
        )
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.close()  # gone, 950 KB short
        async with httpx.AsyncClient(base_url=base) as client:
            async with asyncio.timeout(20):
                metrics = ""
                while 'route="/api/v1/files"' not in metrics:
                    metrics = (await client.get("/metrics")).text
                    await asyncio.sleep(0.1)
    # Read once the server has stopped: request lines are written in batches, flushed at exit.
    log = (tmp_path / f"uvicorn-{port}.log").read_text()

    counted = [line for line in metrics.splitlines() if line.startswith("http_requests_total")]
    assert any('route="/api/v1/files",status="499"' in line for line in counted), counted
    assert not any('status="500"' in line for line in counted), counted
    assert "POST /api/v1/files 499" in log
    assert "Traceback" not in log
    assert files_in(storage) == []
    assert await db.fetch_all(migrated_db, "SELECT count(*) FROM files") == [(0,)]


async def test_a_database_socket_that_is_gone_is_503(tmp_path: Path) -> None:
    """A stopped PostgreSQL on a unix socket: its socket file is missing, not refused."""
    gone = URL.create("postgresql+asyncpg", username="app", database="app").set(
        query={"host": str(tmp_path / "no-postgres-here")}
    )
    async with (
        uvicorn_server(gone, tmp_path / "files") as base,
        httpx.AsyncClient(base_url=base) as client,
    ):
        login = await client.post(f"{API}/auth/token", data={"username": "a", "password": "b"})
        ready = await client.get("/readyz")

    assert login.status_code == 503, login.text
    assert login.json()["code"] == "database_unavailable"
    assert login.headers["retry-after"] == "5"
    assert ready.status_code == 503
    assert ready.json()["reason"] == "database unreachable (FileNotFoundError)"


async def test_an_exhausted_pool_answers_503_quickly(migrated_db: URL, tmp_path: Path) -> None:
    async with uvicorn_server(
        migrated_db, tmp_path / "files", DB_POOL_SIZE="1", DB_POOL_TIMEOUT="0.5"
    ) as base:
        auth = await account_at(base, "pooled")
        engine = create_async_engine(migrated_db)
        try:
            async with (
                engine.connect() as blocker,
                httpx.AsyncClient(base_url=f"{base}{API}", timeout=30) as client,
            ):
                # A lock makes the first request hold the only pooled connection.
                await blocker.execute(text("LOCK TABLE users IN ACCESS EXCLUSIVE MODE"))
                first = asyncio.create_task(client.get("/users/me", headers=auth))
                await asyncio.sleep(0.5)
                started = time.monotonic()
                second = await client.get("/users/me", headers=auth)
                waited = time.monotonic() - started
                await blocker.rollback()
                assert (await first).status_code == 200
        finally:
            await engine.dispose()

    assert second.status_code == 503
    assert second.headers["retry-after"] == "1"
    assert "no database connection was free" in second.json()["detail"]
    assert waited < 5


async def test_logins_do_not_stall_the_event_loop(migrated_db: URL, tmp_path: Path) -> None:
    async with uvicorn_server(migrated_db, tmp_path / "files") as base:
        await account_at(base, "hasher")
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:

            async def log_in() -> int:
                response = await client.post(
                    f"{API}/auth/token", data={"username": "hasher", "password": PASSWORD}
                )
                return response.status_code

            logins = [asyncio.create_task(log_in()) for _ in range(8)]
            latencies = []
            while not all(task.done() for task in logins):
                started = time.monotonic()
                assert (await client.get("/healthz")).status_code == 200
                latencies.append(time.monotonic() - started)
                await asyncio.sleep(0.02)
            statuses = await asyncio.gather(*logins)

    assert statuses == [200] * 8
    # argon2 on the loop (~0.1 s per login) holds each /healthz behind a login or two: a median
    # of 0.08-0.2 s measured; off the loop, under 0.01 s.
    median = statistics.median(latencies)
    assert median < 0.05, f"/healthz took {median:.3f}s (median) during logins: {latencies}"


async def test_login_throttling_holds_across_replicas(migrated_db: URL, tmp_path: Path) -> None:
    limits = {"LOGIN_MAX_FAILURES": "4", "LOGIN_FAILURE_WINDOW": "60"}
    async with (
        uvicorn_server(migrated_db, tmp_path / "a", **limits) as first,
        uvicorn_server(migrated_db, tmp_path / "b", **limits) as second,
        httpx.AsyncClient(timeout=30) as client,
    ):
        await account_at(first, "target")
        statuses = []
        for n in range(6):
            base = (first, second)[n % 2]
            response = await client.post(
                f"{base}{API}/auth/token", data={"username": "target", "password": "wrong guess"}
            )
            statuses.append(response.status_code)

    assert statuses == [401, 401, 401, 401, 429, 429]


async def test_reads_survive_the_database_dropping_pooled_connections(
    migrated_db: URL, tmp_path: Path
) -> None:
    async with uvicorn_server(migrated_db, tmp_path / "files", DB_POOL_SIZE="4") as base:
        auth = await account_at(base, "survivor")
        async with httpx.AsyncClient(base_url=f"{base}{API}", timeout=30) as client:
            warm = await asyncio.gather(*(client.get("/users/me", headers=auth) for _ in range(4)))
            assert [r.status_code for r in warm] == [200] * 4
            # What a database restart does to a pool: every connection it holds is gone.
            await db.execute(
                migrated_db,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            after = [await client.get("/users/me", headers=auth) for _ in range(4)]

    assert [r.status_code for r in after] == [200] * 4


async def test_a_download_may_take_longer_than_the_body_idle_timeout(
    migrated_db: URL, tmp_path: Path
) -> None:
    """The idle limit is for request bodies: a slow reader still gets the whole file."""
    async with uvicorn_server(
        migrated_db, tmp_path / "files", REQUEST_BODY_IDLE_TIMEOUT="1"
    ) as base:
        auth = await account_at(base, "slowreader")
        content = b"x" * 20_000_000
        async with httpx.AsyncClient(base_url=f"{base}{API}", timeout=60) as client:
            upload = await client.post("/files", headers=auth, files={"file": ("big.bin", content)})
            assert upload.status_code == 201, upload.text
            received = 0
            started = time.monotonic()
            url = f"/files/{upload.json()['id']}/content"
            async with client.stream("GET", url, headers=auth) as response:
                async for chunk in response.aiter_bytes(256 * 1024):
                    received += len(chunk)
                    await asyncio.sleep(0.05)
            elapsed = time.monotonic() - started

    assert elapsed > 2  # well past the one-second idle limit
    assert received == len(content)


async def test_logins_waiting_for_a_hash_hold_no_connection(
    migrated_db: URL, tmp_path: Path
) -> None:
    """Six logins queue for one hashing slot on a pool of one: nobody gets a 503."""
    async with uvicorn_server(
        migrated_db,
        tmp_path / "files",
        DB_POOL_SIZE="1",
        DB_POOL_TIMEOUT="0.5",
        PASSWORD_HASH_CONCURRENCY="1",
    ) as base:
        reader = await account_at(base, "queued")
        async with httpx.AsyncClient(base_url=f"{base}{API}", timeout=30) as client:
            logins = [
                client.post("/auth/token", data={"username": "queued", "password": PASSWORD})
                for _ in range(6)
            ]
            reads = [client.get("/users/me", headers=reader) for _ in range(3)]
            responses = await asyncio.gather(*logins, *reads)

    assert [r.status_code for r in responses] == [200] * 9, [r.text for r in responses]


async def test_sigterm_lets_the_request_in_flight_finish(migrated_db: URL, tmp_path: Path) -> None:
    """A rollout's SIGTERM arrives while an upload is still coming in: it completes, the file
    is kept, new connections are refused, and the process then exits."""
    storage = tmp_path / "files"
    async with uvicorn_process(migrated_db, storage, UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN="20") as (
        base,
        process,
    ):
        auth = await account_at(base, "rollout")
        upload = asyncio.create_task(trickle_upload(base, auth, size=30_000, pieces=10, pause=0.2))
        await asyncio.sleep(0.6)
        process.send_signal(signal.SIGTERM)
        status, body = await upload
        assert status == 201, body
        assert len(files_in(storage)) == 1
        exit_code = await asyncio.to_thread(process.wait, 30)
        assert exit_code == -signal.SIGTERM  # uvicorn re-raises the signal once drained
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient() as client:
                await client.get(f"{base}/healthz")


def manifest_env(name: str) -> str:
    """An environment variable as the shipped API Deployment sets it."""
    deployment = yaml.safe_load((PROJECT_ROOT / "k8s/base/deployment.yaml").read_text())
    (api,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "api"]
    return str(next(item["value"] for item in api["env"] if item["name"] == name))


async def test_the_login_throttle_cannot_be_spoofed_or_overflowed(
    migrated_db: URL, tmp_path: Path
) -> None:
    # Trusted as the manifests trust the ingress; here the "ingress" is this test, on loopback.
    trusted = manifest_env("FORWARDED_ALLOW_IPS") + ",127.0.0.1"
    limits = {"LOGIN_MAX_FAILURES": "4", "LOGIN_FAILURE_WINDOW": "60"}
    async with (
        uvicorn_server(migrated_db, tmp_path / "f", FORWARDED_ALLOW_IPS=trusted, **limits) as base,
        httpx.AsyncClient(base_url=f"{base}{API}", timeout=30) as client,
    ):
        await account_at(base, "target")

        async def attempt(login: str, forwarded: str, password: str = "wrong guess") -> int:
            response = await client.post(
                "/auth/token",
                data={"username": login, "password": password},
                headers={"X-Forwarded-For": forwarded},
            )
            return response.status_code

        # The entry a client writes (leftmost) changes every time; the proxy's (rightmost) not.
        rotating = [await attempt(f"nobody{n}", f"198.51.{n}.9, 203.0.113.7") for n in range(5)]
        # The account by its username and by its email, from a new address each time.
        logins = ["target", "TARGET@example.com", "target", "target@example.com"]
        one_account = [await attempt(login, f"192.0.2.{n}") for n, login in enumerate(logins)]
        right_password = await attempt("target", "192.0.2.200", PASSWORD)
        # A client-written address of any length is counted, never a 500.
        overflow = [await attempt(f"other{n}", "a" * 400) for n in range(5)]

    assert rotating == [401, 401, 401, 401, 429]
    assert one_account == [401, 401, 401, 401]
    assert right_password == 429
    assert overflow == [401, 401, 401, 401, 429]


async def raw_request(
    base: str, head: bytes, *, then: bytes = b"", pause: float = 0.0, repeat: int = 0
) -> bytes:
    """Send `head`, then `then` `repeat` times (pausing between), never finishing the request
    head; what the server answers."""
    host, port = base.removeprefix("http://").split(":")

    def talk() -> bytes:
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            try:
                sock.sendall(head)
                for _ in range(repeat):
                    time.sleep(pause)
                    sock.sendall(then)
            except OSError:
                pass  # the server closed it: its answer is already on the way
            answer = b""
            with contextlib.suppress(OSError):
                while chunk := sock.recv(65536):
                    answer += chunk
            return answer

    return await asyncio.to_thread(talk)


async def test_request_heads_are_bounded_in_size_and_time(migrated_db: URL, tmp_path: Path) -> None:
    async with uvicorn_process(migrated_db, tmp_path / "f", HTTP_HEADER_TIMEOUT="1") as (base, _):
        start = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: "
        # 64 MB of one header, 64 KB at a time: cut off after the first tens of kilobytes.
        huge = await raw_request(base, start, then=b"a" * 65_536, repeat=1000)
        started = time.monotonic()
        # A head that never ends, a byte at a time.
        slow = await raw_request(base, start, then=b"a", pause=0.2, repeat=100)
        slow_took = time.monotonic() - started
        silent = await raw_request(base, b"")  # connects, sends nothing
        async with httpx.AsyncClient(timeout=10) as client:
            normal = await client.get(f"{base}/healthz", headers={"X-Fine": "b" * 8000})

    assert huge.startswith(b"HTTP/1.1 431 ")
    assert slow.startswith(b"HTTP/1.1 408 ")
    assert slow_took < 10
    assert silent.startswith(b"HTTP/1.1 408 ")
    assert normal.status_code == 200
