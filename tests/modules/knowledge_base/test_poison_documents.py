"""Hostile documents against real processes: a parse is bounded in time and memory, runs where
it cannot stall the API or the worker, stops when its document goes, and a document that keeps
killing its worker ends `failed` instead of being claimed forever."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from docx import Document as Docx
from sqlalchemy.engine import URL

from tests.modules.user.factories import account
from tests.support import db
from tests.support.server import uvicorn_server, worker_process

pytestmark = [pytest.mark.slow]

API = "/api/v1"
# html.parser is quadratic on repeated "<a": 200 KB took 40 s on the attacker's machine.
SLOW_HTML = b"<a" * 300_000
# The Markdown heading pattern backtracked cubically on this (2.5 KB): 38 s.
BACKTRACKING_MARKDOWN = "# a" + " " * 2_500 + "x"


async def add_file(
    client: httpx.AsyncClient, auth: dict[str, str], name: str, data: bytes, content_type: str
) -> str:
    """Upload a file and queue it as a document in a new knowledge base; the document's URL."""
    kb = (await client.post("/knowledge-bases", headers=auth, json={"name": name})).json()
    upload = await client.post("/files", headers=auth, files={"file": (name, data, content_type)})
    assert upload.status_code == 201, upload.text
    added = await client.post(
        f"/knowledge-bases/{kb['id']}/documents",
        headers=auth,
        json={"file_id": upload.json()["id"]},
    )
    assert added.status_code == 202, added.text
    return str(added.headers["location"]).removeprefix(API)


async def until(check: Callable[[], Awaitable[Any]], within: float = 60) -> Any:
    """Poll `check` until it returns something truthy (at most `within` seconds)."""
    async with asyncio.timeout(within):
        while not (found := await check()):  # noqa: ASYNC110 (state in other processes)
            await asyncio.sleep(0.1)
        return found


async def status_of(client: httpx.AsyncClient, url: str, auth: dict[str, str]) -> dict[str, Any]:
    document: dict[str, Any] = (await client.get(url, headers=auth)).json()
    return document


async def attempts(database: URL) -> list[tuple[str, int]]:
    rows = await db.fetch_all(database, "SELECT status, attempts FROM documents")
    return [(str(row[0]), int(str(row[1]))) for row in rows]


def parse_children(worker: int) -> list[int]:
    """The worker's parser processes (their pids)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == worker and b"knowledge_base.isolation" in command:
            found.append(int(entry.name))
    return found


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return (
        int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])
        / 1024
    )


def xml_heavy_docx() -> bytes:
    """A DOCX inside every declared allowance (30 MB of XML in 0.8 MB) whose XML tree takes
    well over a gigabyte to build: it took the worker to 1,229 MB before."""
    blank = io.BytesIO()
    Docx().save(blank)
    source = zipfile.ZipFile(io.BytesIO(blank.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "word/document.xml":
                head, tail = data.split(b"<w:body>")
                paragraphs = b"<w:p><w:r><w:t>a</w:t></w:r></w:p>" * 900_000
                data = head + b"<w:body>" + paragraphs + tail
            archive.writestr(info.filename, data)
        archive.writestr("word/media/pad.bin", os.urandom(700_000), zipfile.ZIP_STORED)
    return out.getvalue()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
async def test_parsing_never_stalls_the_api_and_stops_at_its_time_limit(
    migrated_db: URL, tmp_path: Path
) -> None:
    """In-process ingestion (`dev.py serve`'s default): the API answers while hostile files are
    parsed, and a parse past PARSE_TIMEOUT_SECONDS fails the document with the reason."""
    async with (
        uvicorn_server(migrated_db, tmp_path / "f", PARSE_TIMEOUT_SECONDS="3") as base,
        httpx.AsyncClient(base_url=f"{base}{API}", timeout=30) as client,
    ):
        auth = await account(client, "attacker")
        kb = (await client.post("/knowledge-bases", headers=auth, json={"name": "kb"})).json()
        markdown = await client.post(
            f"/knowledge-bases/{kb['id']}/documents",
            headers=auth,
            json={"title": "heading", "text": BACKTRACKING_MARKDOWN},
        )
        slow = await add_file(client, auth, "slow.html", SLOW_HTML, "text/html")
        started = time.monotonic()
        slowest = 0.0
        while (await status_of(client, slow, auth))["status"] in ("pending", "processing"):
            asked = time.monotonic()
            assert (await client.get(f"{base}/healthz")).status_code == 200
            slowest = max(slowest, time.monotonic() - asked)
            assert time.monotonic() - started < 60
            await asyncio.sleep(0.1)
        heading_url = markdown.headers["location"].removeprefix(API)
        heading = await until(
            lambda: _unless(status_of(client, heading_url, auth), "pending", "processing")
        )
        ended = await status_of(client, slow, auth)

    assert heading["status"] == "ready"
    assert ended["status"] == "failed"
    assert "took longer than 3 s (PARSE_TIMEOUT_SECONDS)" in ended["error"]
    assert slowest < 1.0, f"/healthz took {slowest:.2f} s while documents were parsed"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
async def test_a_parse_stops_when_its_document_is_deleted_and_its_lease_is_renewed(
    migrated_db: URL, tmp_path: Path
) -> None:
    storage = tmp_path / "f"
    worker_settings = {"INGESTION_LEASE_SECONDS": "2", "INGESTION_CONCURRENCY": "2"}
    async with (
        uvicorn_server(migrated_db, storage, BACKGROUND_IN_PROCESS="false") as base,
        worker_process(migrated_db, storage, **worker_settings) as (_, worker),
        httpx.AsyncClient(base_url=f"{base}{API}", timeout=30) as client,
    ):
        auth = await account(client, "deleter")
        slow = await add_file(client, auth, "slow.html", SLOW_HTML, "text/html")
        [child] = await until(lambda: asyncio.to_thread(parse_children, worker.pid))
        # Three leases pass: renewed, it is not taken over by the worker's free slot.
        await asyncio.sleep(6)
        still = await attempts(migrated_db)
        assert (await client.delete(slow, headers=auth)).status_code == 204
        gone = await until(lambda: asyncio.to_thread(lambda: not Path(f"/proc/{child}").exists()))

    assert still == [("processing", 1)]
    assert gone
    assert await attempts(migrated_db) == []


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
async def test_a_document_that_keeps_killing_its_worker_fails_after_its_attempts(
    migrated_db: URL, tmp_path: Path
) -> None:
    """The worker is killed (as the OOM killer would) each time it holds the document: after
    INGESTION_MAX_ATTEMPTS claims it is `failed` with the reason, never claimed again."""
    storage = tmp_path / "f"
    worker_settings = {"INGESTION_LEASE_SECONDS": "1", "INGESTION_MAX_ATTEMPTS": "2"}
    async with (
        uvicorn_server(migrated_db, storage, BACKGROUND_IN_PROCESS="false") as base,
        httpx.AsyncClient(base_url=f"{base}{API}", timeout=30) as client,
    ):
        auth = await account(client, "poisoner")
        poison = await add_file(client, auth, "slow.html", SLOW_HTML, "text/html")
        for attempt in (1, 2):
            held = [("processing", attempt)]
            async with worker_process(migrated_db, storage, **worker_settings) as (_, worker):
                await until(lambda held=held: _is(attempts(migrated_db), held))  # type: ignore[misc]
                worker.send_signal(signal.SIGKILL)
                await asyncio.to_thread(worker.wait)
        async with worker_process(migrated_db, storage, **worker_settings):
            ended = await until(
                lambda: _unless(status_of(client, poison, auth), "pending", "processing")
            )

    assert ended["status"] == "failed"
    assert "stopped 2 times" in ended["error"]
    assert await attempts(migrated_db) == [("failed", 2)]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
async def test_a_file_that_inflates_in_memory_fails_and_the_worker_stays_small(
    migrated_db: URL, tmp_path: Path
) -> None:
    storage = tmp_path / "f"
    docx = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    async with (
        uvicorn_server(migrated_db, storage, BACKGROUND_IN_PROCESS="false") as base,
        worker_process(migrated_db, storage) as (probes, worker),
        httpx.AsyncClient(base_url=f"{base}{API}", timeout=30) as client,
    ):
        auth = await account(client, "inflater")
        before = peak_rss_mb(worker.pid)
        heavy = await add_file(client, auth, "heavy.docx", xml_heavy_docx(), docx)
        ended = await until(
            lambda: _unless(status_of(client, heavy, auth), "pending", "processing"), within=120
        )
        peak = peak_rss_mb(worker.pid)
        healthy = await client.get(f"{probes}/healthz")

    assert ended["status"] == "failed", ended
    assert healthy.status_code == 200
    # The parse ran in a child: the worker grew by the file and its bookkeeping, not by the tree.
    assert peak - before < 150, f"worker peak RSS {before:.0f} -> {peak:.0f} MB"


async def _is(found: Awaitable[Any], expected: Any) -> bool:
    return bool(await found == expected)


async def _unless(found: Awaitable[dict[str, Any]], *statuses: str) -> dict[str, Any] | None:
    document = await found
    return None if document["status"] in statuses else document
