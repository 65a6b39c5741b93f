"""Servers under test and PostgreSQL, each pinned to its own core when there are two."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
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
