"""A small HTTP/1.1 keep-alive client for load the way wrk cannot make it: at a fixed rate
(open loop, so a slow server cannot slow the clock down and hide its latency), and as a mix of
endpoints with bodies that change per request (uploads, new documents).

Requests are `bench.load.Endpoint`s sent as bytes; a response is read by its Content-Length
(the app never chunks the endpoints measured here). One asyncio process on the load core: near
2,000 requests a second its own scheduling starts to show in both servers' latencies alike.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bench.load import Endpoint


@contextmanager
def no_collector_pauses() -> Iterator[None]:
    """The client's own garbage collector off for a measurement: the bench process holds a
    large heap, and one full collection there would stall every request in flight and be
    charged to whichever server was being measured."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, base_url: str) -> Connection:
        url = urlsplit(base_url)
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        return cls(reader, writer)

    async def send(self, raw: bytes) -> int:
        """One request, its whole response read; the status code."""
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


@dataclass
class Latencies:
    """Per request name: seconds each took, and how many failed (status >= 400 or I/O), by
    status ("io" for a dropped connection), so a failed run says what failed."""

    seconds: dict[str, list[float]] = field(default_factory=dict)
    failures: dict[str, Counter[str]] = field(default_factory=dict)

    def add(self, name: str, took: float, status: int | None) -> None:
        """`status` None: the connection failed before an answer."""
        self.seconds.setdefault(name, []).append(took)
        if status is None or status >= 400:
            self.failures.setdefault(name, Counter())["io" if status is None else str(status)] += 1

    def summary(self, name: str, duration: float) -> dict[str, float]:
        values = sorted(self.seconds.get(name, [0.0]))
        return {
            "requests": len(self.seconds.get(name, [])),
            "rps": len(self.seconds.get(name, [])) / duration,
            "p50_ms": 1000 * statistics.median(values),
            "p99_ms": 1000 * values[min(len(values) - 1, int(len(values) * 0.99))],
            "errors": self.errors(name),
        }

    def errors(self, name: str) -> int:
        return sum(self.failures.get(name, Counter()).values())


async def fixed_rate(
    base_url: str,
    request: Endpoint,
    rate: float,
    seconds: float,
    connections: int = 64,
    warmup: float = 1.0,
) -> dict[str, float]:
    """`rate` requests a second for `seconds`, each timed from when it was due (not sent).

    The first `warmup` seconds run at the same rate but are not recorded: the first requests
    on fresh connections (and a server that was just idle) are not the steady state.
    """
    raw = request.http(urlsplit(base_url).netloc)
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await Connection.open(base_url))
    latencies = Latencies()
    ignored = Latencies()

    async def one(due: float, into: Latencies) -> None:
        connection = await pool.get()
        try:
            status = await connection.send(raw)
            into.add(request.name, time.perf_counter() - due, status)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            into.add(request.name, time.perf_counter() - due, None)
            connection.close()
            connection = await Connection.open(base_url)
        pool.put_nowait(connection)

    start = time.perf_counter()
    skipped = int(rate * warmup)
    tasks = []
    for n in range(skipped + int(rate * seconds)):
        due = start + n / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due, latencies if n >= skipped else ignored)))
    await asyncio.gather(*tasks)
    while not pool.empty():
        pool.get_nowait().close()
    summary = latencies.summary(request.name, seconds)
    summary["errors"] += ignored.errors(request.name)
    return summary


async def closed_loop(
    base_url: str,
    pick: Callable[[], Endpoint],
    connections: int,
    seconds: float,
    on_tick: Callable[[float], None] | None = None,
) -> tuple[Latencies, float]:
    """`connections` clients, each sending the next request `pick` gives as soon as the last
    one answered, for `seconds`. `on_tick(elapsed)` runs about once a second."""
    host = urlsplit(base_url).netloc
    latencies = Latencies()
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        connection = await Connection.open(base_url)
        while time.perf_counter() < deadline:
            request = pick()
            sent = time.perf_counter()
            try:
                status = await connection.send(request.http(host))
                latencies.add(request.name, time.perf_counter() - sent, status)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                latencies.add(request.name, time.perf_counter() - sent, None)
                connection.close()
                connection = await Connection.open(base_url)
        connection.close()

    async def ticker() -> None:
        started = time.perf_counter()
        while time.perf_counter() < deadline:
            await asyncio.sleep(1)
            if on_tick is not None:
                on_tick(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(ticker(), *(client() for _ in range(connections)))
    return latencies, time.perf_counter() - started
