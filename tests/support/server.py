"""The app served for tests: in-process with its own engine, or as a real uvicorn process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI
from sqlalchemy.engine import URL

from backend.core import http
from backend.core.config import PROJECT_ROOT, Settings
from backend.main import create_app
from tests.support import db
from tests.support.kubelet import free_port


@asynccontextmanager
async def serving(url: URL) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process with its own engine on `url`, started and stopped as uvicorn does."""
    app: FastAPI = create_app(Settings(database_url=db.sync_url(url)))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        yield client


def _start(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "uvicorn", "backend.main:app", "--port", str(port)]
    command += ["--http", http.PROTOCOL]  # as every shipped way to serve
    with log.open("ab") as out:  # a file, not a pipe nobody reads (it would fill and block)
        return subprocess.Popen(
            [*command, "--no-access-log"], cwd=PROJECT_ROOT, env=env, stdout=out, stderr=out
        )


@asynccontextmanager
async def uvicorn_process(
    url: URL, storage: Path, **settings: str
) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """Serve the app on a free loopback port against `url`; yield its base URL and process
    (its log is `storage.parent / uvicorn-<port>.log`)."""
    env = {**os.environ, "DATABASE_URL": db.sync_url(url), "FILE_STORAGE_DIR": str(storage)}
    env.pop("TEST_DATABASE_URL", None)
    env.update(settings)
    port = free_port()
    process = _start(env, port, storage.parent / f"uvicorn-{port}.log")
    base = f"http://127.0.0.1:{port}"
    try:
        await _wait_healthy(base, process)
        yield base, process
    finally:
        await _stop(process)


async def _wait_healthy(base: str, process: subprocess.Popen[bytes]) -> None:
    async with asyncio.timeout(60), httpx.AsyncClient() as client:
        while True:
            assert process.poll() is None, f"the process exited ({process.returncode})"
            try:
                if (await client.get(f"{base}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                await asyncio.sleep(0.1)


async def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        await asyncio.to_thread(process.wait, 30)
    except subprocess.TimeoutExpired:
        process.kill()
        await asyncio.to_thread(process.wait)


@asynccontextmanager
async def worker_process(
    url: URL, storage: Path, **settings: str
) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """`python -m backend.worker` against `url`, as its own process; yield its probes' base URL
    and the process (its log is `storage.parent / worker-<port>.log`)."""
    env = {**os.environ, "DATABASE_URL": db.sync_url(url), "FILE_STORAGE_DIR": str(storage)}
    env.pop("TEST_DATABASE_URL", None)
    port = free_port()
    env.update(WORKER_PORT=str(port), **settings)
    with (storage.parent / f"worker-{port}.log").open("ab") as out:
        process = subprocess.Popen(  # noqa: ASYNC220 (returns at once)
            [sys.executable, "-m", "backend.worker"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=out,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        await _wait_healthy(base, process)
        yield base, process
    finally:
        if process.poll() is None:
            await _stop(process)


@asynccontextmanager
async def uvicorn_server(url: URL, storage: Path, **settings: str) -> AsyncIterator[str]:
    """Serve the app on a free loopback port against `url`; yield its base URL."""
    async with uvicorn_process(url, storage, **settings) as (base, _):
        yield base
