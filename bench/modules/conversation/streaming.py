"""What the service adds to a language model's streamed answer, and how many open streams one
worker holds: `python3 dev.py uv run python -m bench.modules.conversation.streaming`.

A loopback OpenAI-compatible model with a fixed latency (tests/support/chat_model.py, its own
process) answers both the bench directly and the app (one uvicorn worker, pinned to its own
core; a scratch database migrated by `alembic upgrade head`):

- **Added latency**: the same question, alternately to the model and through
  `POST /conversations/{id}/messages` (SSE; a conversation with no knowledge base, so no search
  runs): time to the first token and tokens per second, side by side.
- **Open streams**: 200 and 1,000 turns at once on the one worker (opened at RAMP per second), a
  model that waits 4 s before its first token (heartbeats every second meanwhile) then writes
  20 tokens 250 ms apart, each carrying the time it left the model: the worker's memory (idle,
  peak, per stream), how late heartbeats come, and how long a token takes from the model to
  the client (p50, p99).

Writes bench/results/streaming.md. The client is raw asyncio sockets (an HTTP client library
would cost more CPU than the server under test), on the model's core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import URL, make_url

from backend.core.config import PROJECT_ROOT
from backend.db.embedded import embedded_database_url
from bench.db import alembic_upgrade, dsn, scratch_database
from bench.processes import LOAD_CORE, PYTHON, SERVER_CORE, Server, free_port, pinned, start_server

SAMPLES = 30
RAMP = 200  # streams opened per second
HEARTBEAT = 1.0
QUICK = {"first_token_ms": 200, "tokens": 50, "token_ms": 20}
SLOW = {"first_token_ms": 4000, "tokens": 20, "token_ms": 250}
PASSWORD = "horse battery staple"


@dataclass
class Stream:
    """One streamed answer as the client saw it."""

    started: float
    first_token: float | None = None
    last_token: float | None = None
    tokens: int = 0
    token_delays: list[float] = field(default_factory=list)  # model -> client, seconds
    heartbeat_lateness: list[float] = field(default_factory=list)
    ok: bool = False
    error: str | None = None


async def _request(
    port: int, method: str, path: str, headers: dict[str, str], body: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    while (await reader.readline()) not in (b"\r\n", b""):
        pass  # headers: the body is chunked (a streaming response has no length)
    return reader, writer, status


async def _chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """The body of a chunked response, piece by piece."""
    while True:
        size = int((await reader.readline()).strip() or b"0", 16)
        if size == 0:
            return
        data = await reader.readexactly(size)
        await reader.readexactly(2)
        yield data


async def _blocks(reader: asyncio.StreamReader) -> AsyncIterator[str]:
    """Server-sent event blocks (or the model's `data:` lines), as they arrive."""
    buffer = ""
    async for data in _chunks(reader):
        buffer += data.decode()
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            yield block


async def direct(port: int) -> Stream:
    """The model alone: its own time to first token and its tokens per second."""
    body = json.dumps(
        {"model": "m", "stream": True, "messages": [{"role": "user", "content": "Count?"}]}
    ).encode()
    stream = Stream(time.perf_counter())
    reader, writer, _ = await _request(
        port, "POST", "/v1/chat/completions", {"Content-Type": "application/json"}, body
    )
    async for block in _blocks(reader):
        data = block.removeprefix("data: ")
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
            _token(stream)
    writer.close()
    stream.ok = True
    return stream


def _token(stream: Stream, sent: float | None = None) -> None:
    now = time.perf_counter()
    stream.first_token = stream.first_token or now
    stream.last_token = now
    stream.tokens += 1
    if sent is not None:
        stream.token_delays.append(time.monotonic() - sent)


async def through_api(port: int, auth: str, conversation: str) -> Stream:
    """The same through the app: POST .../messages, read as server-sent events."""
    stream = Stream(time.perf_counter())
    headers = {"Authorization": auth, "Accept": "text/event-stream"}
    headers["Content-Type"] = "application/json"
    try:
        reader, writer, status = await _request(
            port,
            "POST",
            f"/api/v1/conversations/{conversation}/messages",
            headers,
            b'{"content": "Count?"}',
        )
        if status != 200:
            stream.error = f"HTTP {status}"
            writer.close()
            return stream
        quiet_since = time.perf_counter()
        async for block in _blocks(reader):
            now = time.perf_counter()
            if block.startswith(": heartbeat"):
                stream.heartbeat_lateness.append(now - quiet_since - HEARTBEAT)
                quiet_since = now
                continue
            quiet_since = now
            fields = dict(line.split(": ", 1) for line in block.splitlines())
            if fields["event"] == "token":
                text = json.loads(fields["data"])["text"]
                _token(stream, float(text) if text.strip()[:1].isdigit() else None)
            elif fields["event"] == "error":
                stream.error = json.loads(fields["data"])["code"]
            elif fields["event"] == "done":
                stream.ok = stream.error is None
                break
        writer.close()
    except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
        stream.error = type(exc).__name__
    return stream


@contextmanager
def model_server(first_token_ms: int, tokens: int, token_ms: int) -> Iterator[int]:
    port = free_port()
    command = [PYTHON, "-m", "tests.support.chat_model", "--port", str(port)]
    command += ["--first-token-ms", str(first_token_ms), "--tokens", str(tokens)]
    command += ["--token-ms", str(token_ms)]
    process = subprocess.Popen(pinned(LOAD_CORE, command), cwd=PROJECT_ROOT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("the loopback model did not start") from None
                time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def app_server(url: URL, model_port: int, workdir: Path) -> Iterator[Server]:
    env = {
        **os.environ,
        "DATABASE_URL": dsn(url),
        "FILE_STORAGE_DIR": str(workdir / "files"),
        "BACKGROUND_IN_PROCESS": "false",
        "MODEL_BASE_URL": f"http://127.0.0.1:{model_port}/v1",
        "MODEL_NAME": "loopback",
        "MODEL_DAILY_TOKENS_PER_USER": "0",
        "SSE_HEARTBEAT_SECONDS": str(HEARTBEAT),
        "LOG_LEVEL": "WARNING",
        # A thousand turns starting together queue for the pool's connections.
        "DB_POOL_TIMEOUT": "60",
    }
    server = start_server("backend.main:app", env, "/readyz", core=SERVER_CORE)
    try:
        yield server
    finally:
        server.stop()


def _login(base: str) -> str:
    with httpx.Client(base_url=f"{base}/api/v1", timeout=60) as api:
        account = {"email": "s@example.com", "username": "streamer", "password": PASSWORD}
        api.post("/auth/register", json=account)
        token = api.post("/auth/token", data={"username": "streamer", "password": PASSWORD})
        return f"Bearer {token.json()['access_token']}"


def _conversations(base: str, auth: str, count: int) -> list[str]:
    with httpx.Client(base_url=f"{base}/api/v1", timeout=60) as api:
        return [
            api.post("/conversations", headers={"Authorization": auth}, json={"title": "b"}).json()[
                "id"
            ]
            for _ in range(count)
        ]


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def added_latency(
    model_port: int, app_port: int, auth: str, conversation: str
) -> dict[str, Any]:
    direct_runs, api_runs = [], []
    for _ in range(3):  # warm both paths
        await direct(model_port)
        await through_api(app_port, auth, conversation)
    for _ in range(SAMPLES):
        direct_runs.append(await direct(model_port))
        api_runs.append(await through_api(app_port, auth, conversation))

    def summary(runs: list[Stream]) -> dict[str, float]:
        ttft = [(s.first_token or 0) - s.started for s in runs]
        rates = [
            (s.tokens - 1) / ((s.last_token or 0) - (s.first_token or 0))
            for s in runs
            if s.tokens > 1
        ]
        return {
            "ttft_p50_ms": statistics.median(ttft) * 1000,
            "ttft_p90_ms": _pct(ttft, 0.9) * 1000,
            "tokens_per_s": statistics.median(rates),
            "failed": sum(not s.ok for s in runs),
        }

    return {"direct": summary(direct_runs), "api": summary(api_runs)}


async def open_streams(
    server: Server, app_port: int, auth: str, conversations: list[str]
) -> dict[str, Any]:
    idle = server.rss_bytes()
    peak = idle
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, server.rss_bytes())
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    tasks = []
    started = time.perf_counter()
    for n, conversation in enumerate(conversations):
        tasks.append(asyncio.create_task(through_api(app_port, auth, conversation)))
        await asyncio.sleep(max(0.0, started + (n + 1) / RAMP - time.perf_counter()))
    streams = await asyncio.gather(*tasks)
    done.set()
    await sampler
    delays = [d for s in streams for d in s.token_delays]
    lateness = [x for s in streams for x in s.heartbeat_lateness]
    errors: dict[str, int] = {}
    for s in streams:
        if not s.ok:
            errors[s.error or "unfinished"] = errors.get(s.error or "unfinished", 0) + 1
    return {
        "streams": len(streams),
        "completed": sum(s.ok for s in streams),
        "errors": errors,
        "rss_idle_mb": idle / 2**20,
        "rss_peak_mb": peak / 2**20,
        "kb_per_stream": (peak - idle) / 1024 / len(streams),
        "heartbeats": len(lateness),
        "heartbeat_late_p50_ms": _pct(lateness, 0.5) * 1000,
        "heartbeat_late_p99_ms": _pct(lateness, 0.99) * 1000,
        "token_latency_p50_ms": _pct(delays, 0.5) * 1000,
        "token_latency_p99_ms": _pct(delays, 0.99) * 1000,
        "ttft_p50_s": _pct([(s.first_token or 0) - s.started for s in streams if s.ok], 0.5),
        "ttft_p99_s": _pct([(s.first_token or 0) - s.started for s in streams if s.ok], 0.99),
    }


async def run(server_url: URL, counts: list[int]) -> dict[str, Any]:
    results: dict[str, Any] = {"counts": counts}
    with tempfile.TemporaryDirectory() as workdir:
        async with scratch_database(server_url, "bench_streaming") as url:
            alembic_upgrade(url)
            with model_server(**QUICK) as model, app_server(url, model, Path(workdir)) as app:
                port = int(app.base_url.rsplit(":", 1)[1])
                auth = _login(app.base_url)
                (conversation,) = _conversations(app.base_url, auth, 1)
                results["latency"] = await added_latency(model, port, auth, conversation)
            for count in counts:
                with model_server(**SLOW) as model, app_server(url, model, Path(workdir)) as app:
                    port = int(app.base_url.rsplit(":", 1)[1])
                    auth = _login(app.base_url)
                    conversations = _conversations(app.base_url, auth, count)
                    results[str(count)] = await open_streams(app, port, auth, conversations)
    return results


def report(results: dict[str, Any]) -> str:
    direct, api = results["latency"]["direct"], results["latency"]["api"]
    lines = [
        "# Streaming: what the service adds to a model's answer",
        "",
        f"A loopback model: first token after {QUICK['first_token_ms']} ms, then "
        f"{QUICK['tokens']} tokens {QUICK['token_ms']} ms apart. {SAMPLES} answers each, "
        "alternating, one at a time; through the API: `POST .../messages` with SSE, one uvicorn "
        "worker on its own core.",
        "",
        "| | time to first token p50 | p90 | tokens/s | failed |",
        "|---|---|---|---|---|",
        f"| the model directly | {direct['ttft_p50_ms']:.1f} ms | {direct['ttft_p90_ms']:.1f} ms "
        f"| {direct['tokens_per_s']:.1f} | {direct['failed']} |",
        f"| through the API | {api['ttft_p50_ms']:.1f} ms | {api['ttft_p90_ms']:.1f} ms "
        f"| {api['tokens_per_s']:.1f} | {api['failed']} |",
        f"| **added** | **{api['ttft_p50_ms'] - direct['ttft_p50_ms']:.1f} ms** "
        f"| {api['ttft_p90_ms'] - direct['ttft_p90_ms']:.1f} ms | | |",
        "",
        "Target: under 10 ms added to the first token.",
        "",
        f"Open streams on one worker: turns opened {RAMP} a second; the model waits "
        f"{SLOW['first_token_ms'] / 1000:.0f} s (heartbeats every {HEARTBEAT:.0f} s meanwhile), "
        f"then writes {SLOW['tokens']} tokens {SLOW['token_ms']} ms apart.",
        "",
        "| streams | completed | worker RSS idle / peak | per stream | heartbeat late p50 / p99 "
        "| token model->client p50 / p99 | first token p50 / p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for count in results["counts"]:
        r = results[str(count)]
        errors = f" ({r['errors']})" if r["errors"] else ""
        lines.append(
            f"| {r['streams']:,} | {r['completed']:,}{errors} | {r['rss_idle_mb']:.0f} / "
            f"{r['rss_peak_mb']:.0f} MB | {r['kb_per_stream']:.0f} kB "
            f"| {r['heartbeat_late_p50_ms']:.1f} / {r['heartbeat_late_p99_ms']:.1f} ms "
            f"| {r['token_latency_p50_ms']:.1f} / {r['token_latency_p99_ms']:.1f} ms "
            f"| {r['ttft_p50_s']:.2f} / {r['ttft_p99_s']:.2f} s |"
        )
    lines += ["", "Target: 1,000 open streams on one worker within 500 MB."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.modules.conversation.streaming")
    parser.add_argument("--streams", default="200,1000", help="concurrent streams, comma-separated")
    args = parser.parse_args(argv)
    server = make_url(embedded_database_url(PROJECT_ROOT / ".data" / "postgres-bench"))
    results = asyncio.run(run(server, [int(n) for n in args.streams.split(",") if n]))
    table = report(results)
    print(table)
    out = PROJECT_ROOT / "bench" / "results"
    (out / "streaming.md").write_text(table)
    (out / "streaming.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
