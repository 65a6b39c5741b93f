#!/usr/bin/env python3
"""Developer entry point that needs only Python 3.11+ and pip.

    python3 dev.py serve              # migrate the (embedded) database, serve :8000 (PORT)
    python3 dev.py test               # ruff, mypy and the whole test suite
    python3 dev.py bench              # benchmarks -> bench/results/latest.md and latest.png
    python3 dev.py fuzz               # schemathesis against a real server (--examples N)
    python3 dev.py alembic ARGS...    # uv run alembic ARGS... (e.g. revision --autogenerate -m x)
    python3 dev.py superuser EMAIL USERNAME   # create a superuser (asks for the password)
    python3 dev.py db status|psql|log|stop|reset   # the embedded PostgreSQL
    python3 dev.py uv ARGS...         # the uv this script uses (uv run ..., uv add ...)

Installs uv into .tools/ when it is not on PATH; uv then builds .venv from uv.lock.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
TOOLS = ROOT / ".tools" / "uv"


def find_uv() -> str:
    on_path = shutil.which("uv")
    if on_path:
        return on_path
    for name in ("uv", "uv.exe"):
        candidate = TOOLS / "bin" / name
        if candidate.exists():
            return str(candidate)
    print("uv not found: installing it into .tools/uv with pip", file=sys.stderr)
    # --target keeps it out of the system Python (no root, no PEP 668 refusal).
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(TOOLS), "uv"],
        check=True,
    )
    for name in ("uv", "uv.exe"):
        candidate = TOOLS / "bin" / name
        if candidate.exists():
            return str(candidate)
    sys.exit(f"pip installed uv but no uv binary is in {TOOLS / 'bin'}")


def run(uv: str, *args: str, echo: bool = True) -> None:
    if echo:
        print("+ uv", " ".join(args), flush=True)
    process = subprocess.Popen([uv, *args], cwd=ROOT)
    while True:
        try:
            code = process.wait()
            break
        except KeyboardInterrupt:
            # Ctrl+C reached the child too (same process group): let it shut down cleanly.
            continue
    if code != 0:
        sys.exit(128 + signal.SIGINT if code == -signal.SIGINT else code)


def run_module(uv: str, module: str, extra: list[str], *, echo: bool = False) -> None:
    run(uv, "run", "--locked", "python", "-m", module, *extra, echo=echo)


def serve(uv: str, extra: list[str]) -> None:
    # Migrates, then runs uvicorn --reload while holding the embedded database across reloads.
    run_module(uv, "backend.devserver", extra, echo=True)


def test(uv: str, extra: list[str]) -> None:
    run(uv, "run", "--locked", "ruff", "check", ".")
    run(uv, "run", "--locked", "ruff", "format", "--check", ".")
    run(uv, "run", "--locked", "mypy")
    # Two pytest workers (pytest-xdist): 5.6 minutes instead of 9.9 on two cores. Each has its
    # own template database and servers; `uv run pytest` alone runs in one process.
    run(uv, "run", "--locked", "pytest", "-n", "2", *extra)


def bench(uv: str, extra: list[str]) -> None:
    run_module(uv, "bench.run", extra, echo=True)


def fuzz(uv: str, extra: list[str]) -> None:
    run_module(uv, "tests.support.fuzz", extra, echo=True)


def alembic(uv: str, extra: list[str]) -> None:
    run(uv, "run", "--locked", "alembic", *extra, echo=False)


def superuser(uv: str, extra: list[str]) -> None:
    run_module(uv, "backend.modules.user.superuser", extra)


def db(uv: str, extra: list[str]) -> None:
    run_module(uv, "backend.db.embedded", extra)


def uv_passthrough(uv: str, extra: list[str]) -> None:
    run(uv, *extra, echo=False)


COMMANDS = {
    "serve": serve,
    "test": test,
    "bench": bench,
    "fuzz": fuzz,
    "alembic": alembic,
    "superuser": superuser,
    "db": db,
    "uv": uv_passthrough,
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: python3 dev.py {{{'|'.join(COMMANDS)}}} [args]   (see the README)")
    COMMANDS[sys.argv[1]](find_uv(), sys.argv[2:])


if __name__ == "__main__":
    main()
