"""A real uvicorn process serving the app, for tests that need real sockets and real clients."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from sqlalchemy.engine import URL

from backend.core.config import PROJECT_ROOT
from tests import db
from tests.deploy.kubelet import free_port


def _start(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "uvicorn", "backend.main:app", "--port", str(port)]
    with log.open("ab") as out:  # a file, not a pipe nobody reads (it would fill and block)
        return subprocess.Popen(
            [*command, "--no-access-log"], cwd=PROJECT_ROOT, env=env, stdout=out, stderr=out
        )


@asynccontextmanager
async def uvicorn_server(url: URL, storage: Path, **settings: str) -> AsyncIterator[str]:
    """Serve the app on a free loopback port against `url`; yield its base URL."""
    env = {**os.environ, "DATABASE_URL": db.sync_url(url), "FILE_STORAGE_DIR": str(storage)}
    env.pop("TEST_DATABASE_URL", None)
    env.update(settings)
    port = free_port()
    process = _start(env, port, storage.parent / f"uvicorn-{port}.log")
    base = f"http://127.0.0.1:{port}"
    try:
        async with asyncio.timeout(60), httpx.AsyncClient() as client:
            while True:
                try:
                    if (await client.get(f"{base}/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, 30)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)
