"""Servers under test and PostgreSQL, each pinned to its own core when there are two."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from backend.core.config import PROJECT_ROOT

PYTHON = sys.executable
MULTI_CORE = (os.cpu_count() or 1) >= 2
SERVER_CORE, LOAD_CORE = "0", "1"


def pinned(core: str, command: list[str]) -> list[str]:
    return ["taskset", "-c", core, *command] if MULTI_CORE else command


@contextmanager
def on_load_core() -> Iterator[None]:
    """Run this process (the bench's own client) on LOAD_CORE for the block, off the server's."""
    if not MULTI_CORE:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


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

    def pids(self) -> list[int]:
        """The server and its workers (uvicorn --workers forks them)."""
        children = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        return [self.process.pid, *map(int, children)]

    def rss_bytes(self) -> int:
        return sum(_status_kb(pid, "VmRSS:") for pid in self.pids()) * 1024

    def cpu_seconds(self) -> float:
        """User plus system CPU time so far, of the server and its workers."""
        return sum(_cpu_seconds(pid) for pid in self.pids())


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def core_times() -> list[tuple[int, int]]:
    """(busy, total) jiffies per core since boot, from /proc/stat."""
    times = []
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3].isdigit():
            values = [int(v) for v in line.split()[1:]]
            idle = values[3] + values[4]
            times.append((sum(values) - idle, sum(values)))
    return times


def core_busy(before: list[tuple[int, int]], after: list[tuple[int, int]]) -> list[float]:
    """Each core's busy share (0-1) between two `core_times()` readings."""
    return [
        (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
        for (b0, t0), (b1, t1) in zip(before, after, strict=True)
    ]


def start_server(
    app: str,
    env: dict[str, str],
    ready_path: str,
    *,
    cwd: Path = PROJECT_ROOT,
    workers: int = 1,
    core: str = SERVER_CORE,
    factory: bool = False,
) -> Server:
    """uvicorn, no access log; waits for `ready_path` 200. One worker is pinned to `core`;
    several are left to the scheduler (they are there to use every core). `factory`: `app`
    names a function that builds the app."""
    port = free_port()
    command = [PYTHON, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--no-access-log", "--log-level", "warning"]
    if factory:
        command.append("--factory")
    if workers > 1:
        command += ["--workers", str(workers)]
    started = time.perf_counter()
    # Its log (a JSON line per request, as in production) goes to a file, as a container's
    # does; shown if the server dies before it is ready.
    log = tempfile.TemporaryFile()  # noqa: SIM115 (open while the server runs)
    process = subprocess.Popen(
        pinned(core, command) if workers == 1 else command,
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=log,
    )
    base_url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base_url) as client:
        while True:
            if process.poll() is not None:
                log.seek(0)
                tail = log.read()[-4000:].decode(errors="replace")
                raise SystemExit(
                    f"{app} exited with {process.returncode} before it was ready:\n{tail}"
                )
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
