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
    python3 dev.py module remove NAME # delete a module: its folders, its line, its dependencies

Installs uv into .tools/ when it is not on PATH; uv then builds .venv from uv.lock.
"""

from __future__ import annotations

import re
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


# Where a module's code lives besides main.py's line: its folder, its tests, its benchmarks.
MODULE_FOLDERS = ("backend/modules", "tests/modules", "bench/modules")


def module(uv: str, extra: list[str]) -> None:
    """`module remove NAME`: the module's folders, its line in backend/main.py and its dependency
    group in pyproject.toml go (uv.lock is updated); then the revision that drops its tables is
    written (the database brought to the old head first; its REVIEW notes flag each drop).

    `--no-lock` leaves uv.lock alone; `--python EXE` runs alembic with that interpreter instead
    of `uv run` (an environment of your own)."""
    args = list(extra)
    no_lock = "--no-lock" in args
    if no_lock:
        args.remove("--no-lock")
    python = None
    if "--python" in args:
        at = args.index("--python")
        if at + 1 >= len(args):
            sys.exit("--python needs an interpreter")
        python = args.pop(at + 1)
        del args[at]
    if len(args) != 2 or args[0] != "remove":
        sys.exit("usage: python3 dev.py module remove NAME [--no-lock] [--python EXE]")
    name = args[1]
    main_py = ROOT / "backend" / "main.py"
    source = main_py.read_text(encoding="utf-8")
    listed = re.findall(r'^    "(\w+)",$', source, flags=re.MULTILINE)
    if name not in listed:
        sys.exit(f"no module {name!r} in backend/main.py (its modules: {', '.join(listed)})")
    if name == listed[0]:
        sys.exit(f"{name} is the ground floor: every other module and the core's tests need it")
    # What still needs it: a module after it (remove that one first), or anything else.
    mine = [ROOT / folder / name for folder in MODULE_FOLDERS]
    needing = sorted(
        str(path.relative_to(ROOT))
        for top in ("backend", "tests", "bench")
        for path in (ROOT / top).rglob("*.py")
        if not any(path.is_relative_to(folder) for folder in mine)
        and re.search(
            rf"^\s*(from|import)\s+(backend|tests|bench)\.modules\.{name}\b",
            path.read_text(encoding="utf-8"),
            flags=re.MULTILINE,
        )
    )
    if needing:
        sys.exit(f"{name} is still imported by: {', '.join(needing)} (remove those first)")

    for folder in mine:
        shutil.rmtree(folder, ignore_errors=True)
    main_py.write_text(source.replace(f'    "{name}",\n', "", 1), encoding="utf-8")
    dropped = _drop_dependency_group(name)
    for path in SETTINGS_FILES:
        _drop_section(ROOT / path, name)
    if dropped and not no_lock:
        run(uv, "lock")
    print(f"removed {', '.join(f'{f}/{name}/' for f in MODULE_FOLDERS)}, its line in")
    print(f"backend/main.py and its dependencies ({', '.join(dropped) or 'none'}).", flush=True)

    message = f"remove the {name} module"

    def alembic(*alembic_args: str) -> None:
        command = [python, "-m"] if python else [uv, "run", "--locked"]
        print("+", " ".join([*command, "alembic", *alembic_args]), flush=True)
        if subprocess.run([*command, "alembic", *alembic_args], cwd=ROOT).returncode != 0:
            sys.exit(
                f"the {name} module's files are gone, but its tables are not: once the database "
                f"answers, run `python3 dev.py alembic upgrade head`, then `python3 dev.py alembic "
                f'revision --autogenerate -m "{message}"`, read its REVIEW notes and give it '
                f'squawk_ignore = {{"ban-drop-table": "<why>"}}'
            )

    # The database at the old head (its revisions stay: the tables' history), then the drop.
    before = set((ROOT / "backend" / "alembic" / "versions").glob("*.py"))
    alembic("upgrade", "head")
    alembic("revision", "--autogenerate", "-m", message)
    for script in set((ROOT / "backend" / "alembic" / "versions").glob("*.py")) - before:
        # The drops are what was asked for: the migration linter is told so, with the reason.
        text = script.read_text(encoding="utf-8")
        reason = f"the {name} module was removed (dev.py module remove)"
        accepted = f'squawk_ignore = {{\n    "ban-drop-table": "{reason}",\n}}\n\n\n'
        script.write_text(text.replace("def upgrade()", accepted + "def upgrade()", 1))
        print(f"wrote {script.relative_to(ROOT)}: read its REVIEW notes, then")
    print("    python3 dev.py alembic upgrade head")


# Files that list every setting, a section (`# --- <module> ---`) per module.
SETTINGS_FILES = (".env.example", "k8s/base/configmap.yaml", "k8s/base/secret.template.yaml")


def _drop_section(path: Path, name: str) -> None:
    """Remove the `# --- NAME ---` section of `path`: to the next section, or to the end."""
    kept, inside = [], False
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        marker = re.match(r"\s*# --- (\w+) ---", line)
        if marker:
            inside = marker[1] == name
        if not inside:
            kept.append(line)
    path.write_text("".join(kept), encoding="utf-8")


def _drop_dependency_group(name: str) -> list[str]:
    """Remove the lines under `# module: NAME` in pyproject.toml's dependencies; their names."""
    pyproject = ROOT / "pyproject.toml"
    lines = pyproject.read_text(encoding="utf-8").splitlines(keepends=True)
    kept, dropped, inside = [], [], False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#") or stripped == "]":
            inside = stripped == f"# module: {name}"
            if inside:
                continue
        elif inside:
            dropped.append(stripped.strip('",'))
            continue
        kept.append(line)
    pyproject.write_text("".join(kept), encoding="utf-8")
    return dropped


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
    "module": module,
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: python3 dev.py {{{'|'.join(COMMANDS)}}} [args]   (see the README)")
    command, extra = sys.argv[1], sys.argv[2:]
    # Removing a module without a lock to update needs no uv.
    uv = "" if command == "module" and "--no-lock" in extra else find_uv()
    COMMANDS[command](uv, extra)


if __name__ == "__main__":
    main()
