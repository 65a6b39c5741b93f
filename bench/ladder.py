"""The performance ladder: one change at a time, each rung served and measured beside the raw
baseline in the same run.

A rung is a revision of this repository (checked out into a temporary worktree, so the figures
come from the code as it was), the settings it runs with, and optionally the ASGI app to serve.
The last app rung is this checkout; the ceiling rung is FastAPI over raw asyncpg
(`bench/ceiling.py`). Rungs whose revision this clone does not have (a shallow clone) are
reported as skipped.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.core.config import PROJECT_ROOT
from bench.api import measure_pair
from bench.load import Endpoint
from bench.processes import Server, start_server
from bench.sizes import Size


@dataclass(frozen=True)
class Rung:
    label: str
    revision: str | None  # None: this checkout
    env: dict[str, str] = field(default_factory=dict)
    app: str = "backend.main:app"
    tune_gc: bool = False  # serve through a shim that tunes the collector as the app now does


RUNGS = [
    Rung("as is (6305be7, when this work began)", "6305be7"),
    Rung("+ GC: frozen after start-up, thresholds 7000/20/20", "6305be7", tune_gc=True),
    Rung(
        "+ auth opens a session only to load the user (principal cache off)",
        "9ed42a6",
        {"AUTH_CACHE_SECONDS": "0"},
    ),
    Rung("+ principal cache, users (AUTH_CACHE_SECONDS=5)", "9ed42a6"),
    Rung("+ async dependencies (no thread-pool hop)", "42b680e"),
    Rung("+ verified tokens in the principal cache", "d999a1e"),
    Rung("+ search: read session, pre-built statements", "3924d30"),
    Rung(
        "+ every statement pre-built, routers mounted on the app, cheaper cached users",
        "2276cb1",
    ),
    Rung("+ vectors bound as binary real[] (no text formatting)", None),
    Rung("ceiling: FastAPI + raw asyncpg, no SQLAlchemy", None, app="bench.ceiling:app"),
]

GC_SHIM = """import gc
from backend.main import app
gc.collect()
gc.freeze()
gc.set_threshold(7000, 20, 20)
"""


@contextmanager
def checkout(revision: str | None, workdir: Path) -> Iterator[Path | None]:
    """A worktree of `revision` (None: this checkout); yields None if the clone lacks it."""
    if revision is None:
        yield PROJECT_ROOT
        return
    path = workdir / f"rev-{revision}"
    if not path.exists():
        # Forget worktrees an interrupted run left registered (their folders are gone).
        subprocess.run(["git", "-C", str(PROJECT_ROOT), "worktree", "prune"], capture_output=True)
        added = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "worktree", "add", "--detach", str(path), revision],
            capture_output=True,
        )
        if added.returncode != 0:
            yield None
            return
    yield path


def remove_worktrees(workdir: Path) -> None:
    for path in workdir.glob("rev-*"):
        subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "worktree", "remove", "--force", str(path)],
            capture_output=True,
        )


def serve(rung: Rung, source: Path, env: dict[str, str], workdir: Path) -> Server:
    env = env | rung.env
    app = rung.app
    if rung.tune_gc:
        shims = workdir / "shims"
        shims.mkdir(exist_ok=True)
        (shims / "ladder_gc.py").write_text(GC_SHIM)
        env["PYTHONPATH"] = f"{source}:{shims}"
        app = "ladder_gc:app"
    else:
        env["PYTHONPATH"] = str(source)
    ready = "/healthz" if rung.app.startswith("bench.") else "/readyz"
    return start_server(app, env, ready, cwd=source)


def ladder(
    baseline: Server,
    endpoints: list[Endpoint],
    rungs: list[Rung],
    env: dict[str, str],
    size: Size,
    workdir: Path,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    try:
        for rung in rungs:
            with checkout(rung.revision, workdir) as source:
                if source is None:
                    print(f"  {rung.label}: skipped (revision not in this clone)", flush=True)
                    rows.append({"rung": rung.label, "skipped": True})
                    continue
                server = serve(rung, source, env, workdir)
                try:
                    results = [
                        measure_pair(
                            server, baseline, endpoint, size.ladder_duration, 2, size, workdir
                        )
                        for endpoint in endpoints
                    ]
                finally:
                    server.stop()
            rows.append({"rung": rung.label, "revision": rung.revision, "endpoints": results})
            summary = ", ".join(f"{r['ratio']:.2f}x" for r in results)
            print(f"  {rung.label}: {summary}", flush=True)
    finally:
        remove_worktrees(workdir)
    return rows
