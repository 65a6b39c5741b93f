"""`python3 dev.py serve`: migrate, then serve with auto-reload on the embedded database.

This process holds the embedded PostgreSQL for the whole session, so a reload (a new worker
process) reuses the running server instead of restarting it; Ctrl+C stops both, quietly.
Arguments are uvicorn's (`--port 9000`); PORT sets the port too (default 8000).
"""

from __future__ import annotations

import os
import subprocess
import sys

import uvicorn.main

from backend.core import http
from backend.core.config import PROJECT_ROOT, SettingsError, get_settings
from backend.db.embedded import (
    EmbeddedDatabaseUnavailable,
    embedded_database_url,
    release_embedded_database,
)


def main(argv: list[str]) -> int:
    try:
        settings = get_settings()
        if settings.uses_embedded_db:
            embedded_database_url(settings.embedded_db_dir)
    except (SettingsError, EmbeddedDatabaseUnavailable) as exc:
        print(f"backend: {exc}", file=sys.stderr)
        return 1
    try:
        migrate = subprocess.run(
            [sys.executable, "-m", "alembic", "upgrade", "head"], cwd=PROJECT_ROOT, check=False
        )
        if migrate.returncode != 0:
            return migrate.returncode
        args = ["backend.main:app", "--host", "127.0.0.1", "--port", os.environ.get("PORT", "8000")]
        args += ["--http", http.PROTOCOL]
        args += ["--reload", "--reload-dir", str(PROJECT_ROOT / "backend"), *argv]
        try:
            uvicorn.main.main(args=args, standalone_mode=False)
        except SystemExit as exit_:
            return exit_.code if isinstance(exit_.code, int) else 1
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        if settings.uses_embedded_db:
            release_embedded_database(settings.embedded_db_dir)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
