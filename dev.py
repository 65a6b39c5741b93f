#!/usr/bin/env python3
"""Developer entry point that needs only Python 3.11+ and pip.

    python3 dev.py serve   # migrate the (embedded) database, serve http://127.0.0.1:8000
    python3 dev.py test    # ruff, mypy and the whole test suite
    python3 dev.py bench   # benchmarks -> bench/results/latest.md and latest.png

Installs uv into .tools/ when it is not on PATH; uv then builds .venv from uv.lock.
"""

from __future__ import annotations

import os
import shutil
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


def run(uv: str, *args: str) -> None:
    print("+ uv", " ".join(args), flush=True)
    result = subprocess.run([uv, *args], cwd=ROOT)
    if result.returncode != 0:
        sys.exit(result.returncode)


def serve(uv: str, extra: list[str]) -> None:
    run(uv, "run", "--locked", "alembic", "upgrade", "head")
    args = ["run", "--locked", "uvicorn", "backend.main:app", "--host", "127.0.0.1"]
    args += ["--port", os.environ.get("PORT", "8000"), "--reload", "--reload-dir", "backend"]
    run(uv, *args, *extra)


def test(uv: str, extra: list[str]) -> None:
    run(uv, "run", "--locked", "ruff", "check", ".")
    run(uv, "run", "--locked", "ruff", "format", "--check", ".")
    run(uv, "run", "--locked", "mypy")
    run(uv, "run", "--locked", "pytest", *extra)


def bench(uv: str, extra: list[str]) -> None:
    run(uv, "run", "--locked", "python", "-m", "bench.run", *extra)


COMMANDS = {"serve": serve, "test": test, "bench": bench}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: python3 dev.py {{{'|'.join(COMMANDS)}}} [extra args]")
    COMMANDS[sys.argv[1]](find_uv(), sys.argv[2:])


if __name__ == "__main__":
    main()
