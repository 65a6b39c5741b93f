"""Where a request's CPU goes, layer by layer: py-spy samples the app under wrk, each sample is
charged to the innermost frame that belongs to a known layer, and the shares are applied to the
CPU time per request measured without the profiler attached."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench.load import Endpoint
from bench.processes import LOAD_CORE, Server, pinned
from bench.sizes import Size

# (substring of a frame's file, layer), checked in order for each frame from the innermost out.
LAYERS = [
    ("asyncpg/", "asyncpg (driver)"),
    ("sqlalchemy/", "SQLAlchemy (session, ORM, core)"),
    ("pgvector/", "SQLAlchemy (session, ORM, core)"),
    ("pydantic", "pydantic (validation, JSON)"),
    ("jwt/", "PyJWT"),
    ("fastapi/dependencies/", "FastAPI dependency solving"),
    ("fastapi/", "FastAPI/Starlette routing, middleware, responses"),
    ("starlette/", "FastAPI/Starlette routing, middleware, responses"),
    ("backend/core/limits.py", "FastAPI/Starlette routing, middleware, responses"),
    ("uvicorn/", "uvicorn (HTTP parsing, transport)"),
    ("httptools", "uvicorn (HTTP parsing, transport)"),
    ("backend/", "application code (backend/)"),
    ("numpy", "application code (backend/)"),
    ("anyio/", "event loop, tasks, threads"),
    ("asyncio/", "event loop, tasks, threads"),
    ("uvloop", "event loop, tasks, threads"),
]
RAW = ["-r", "250", "-f", "raw", "-o"]
IDLE = ("Condition.wait", "select ", "Queue.get", "epoll")


def layer_of(stack: list[str]) -> str | None:
    """The layer of one sampled stack (root first), None for an idle thread."""
    if stack and any(stack[-1].startswith(word) for word in IDLE):
        return None
    for frame in reversed(stack):
        for marker, layer in LAYERS:
            if marker in frame:
                return layer
    return "other (interpreter, GC, imports)"


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return found if Path(found).exists() else None


def sample(server: Server, endpoint: Endpoint, workdir: Path, seconds: int) -> Counter[str]:
    profiler = py_spy()
    if profiler is None:
        return Counter()
    script = workdir / f"layers-{abs(hash(endpoint.name))}.lua"
    script.write_text(endpoint.lua())
    command = ["wrk", "-t1", "-c16", f"-d{seconds + 2}s", "-s", str(script)]
    load = subprocess.Popen(
        pinned(LOAD_CORE, [*command, server.base_url + endpoint.path]),
        stdout=subprocess.DEVNULL,
    )
    out = workdir / "profile.txt"
    try:
        subprocess.run(
            [profiler, "record", "-p", str(server.process.pid), "-d", str(seconds), *RAW, str(out)],
            capture_output=True,
            check=True,
        )
    except subprocess.CalledProcessError:
        return Counter()
    finally:
        load.wait()
    shares: Counter[str] = Counter()
    for line in out.read_text().splitlines():
        stack_text, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        layer = layer_of(stack_text.split(";"))
        if layer is not None:
            shares[layer] += int(count)
    return shares


def cpu_by_layer(
    app: Server, endpoints: list[Endpoint], cpu_us: dict[str, float], size: Size, workdir: Path
) -> list[dict[str, Any]]:
    rows = []
    for endpoint in endpoints:
        shares = sample(app, endpoint, workdir, size.profile_seconds)
        total = sum(shares.values())
        if not total:
            return []
        per_request = cpu_us[endpoint.name]
        rows.append(
            {
                "endpoint": endpoint.name,
                "cpu_us": per_request,
                "layers": {
                    layer: per_request * count / total for layer, count in shares.most_common()
                },
            }
        )
    return rows
