"""`python3 dev.py serve` as a developer uses it: reloads, Ctrl+C, and what survives them."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from backend.core.config import PROJECT_ROOT
from backend.db.migrations import head_revisions
from backend.modules.user.settings import development_jwt_secret
from tests.support.kubelet import free_port

pytestmark = [pytest.mark.slow]


def postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


async def wait_ready(url: str) -> None:
    async with asyncio.timeout(90), httpx.AsyncClient() as client:
        while True:
            try:
                if (await client.get(url, timeout=2)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.3)


def start(*command: str, env: dict[str, str], group: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", *command],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=group,  # its own process group, as a terminal gives `dev.py serve`
    )


def embedded_env(pgdata: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TEST_DATABASE_URL")}
    return env | {"EMBEDDED_DB_DIR": str(pgdata), **extra}


async def test_reload_keeps_database_and_logins_and_ctrl_c_stops_everything(
    tmp_path: Path,
) -> None:
    pgdata = tmp_path / "pg"
    watched = tmp_path / "watched"
    watched.mkdir()
    port = free_port()
    env = embedded_env(pgdata, PORT=str(port))
    # The extra --reload-dir lets the test trigger a reload without touching the repository.
    server = start("backend.devserver", "--reload-dir", str(watched), env=env, group=True)
    api = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(f"{api}/readyz")
        database = postmaster_pid(pgdata)
        assert database is not None
        account = {"email": "dev@example.com", "username": "dev", "password": "horse battery"}
        async with httpx.AsyncClient(base_url=f"{api}/api/v1") as client:
            assert (await client.post("/auth/register", json=account)).status_code == 201
            login = await client.post(
                "/auth/token", data={"username": "dev", "password": account["password"]}
            )
            auth = {"Authorization": f"Bearer {login.json()['access_token']}"}

            (watched / "edit.py").write_text("# a developer saves a file\n")
            await asyncio.sleep(1.5)  # the reloader notices, stops the worker, starts another
            await wait_ready(f"{api}/readyz")

            # Same database server, and the token signed before the reload still works.
            assert postmaster_pid(pgdata) == database
            assert (await client.get("/users/me", headers=auth)).status_code == 200

        os.killpg(server.pid, signal.SIGINT)  # Ctrl+C reaches the whole process group
        output, _ = await asyncio.to_thread(server.communicate, None, 60)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()

    assert "Started server process" in output
    assert output.count("Application startup complete") >= 2  # the first worker and the reload
    assert "Traceback" not in output
    assert server.returncode in (0, 130), output
    assert postmaster_pid(pgdata) is None, "the embedded PostgreSQL is still running"


def test_development_jwt_secret_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "data" / "dev-jwt-secret"
    make = development_jwt_secret.__wrapped__  # a new process: no cache

    first = make(path)
    second = make(path)

    assert first == second
    assert len(first) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_sigterm_to_uvicorn_stops_the_embedded_database_it_started(tmp_path: Path) -> None:
    """uvicorn ends a SIGTERM by re-raising it, which skips exit handlers: the app lets go."""
    pgdata = tmp_path / "pg"
    port = free_port()
    server = start("uvicorn", "backend.main:app", "--port", str(port), env=embedded_env(pgdata))
    try:
        await wait_ready(f"http://127.0.0.1:{port}/healthz")
        assert postmaster_pid(pgdata) is not None
        server.terminate()
        output, _ = await asyncio.to_thread(server.communicate, None, 60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()

    assert "Application shutdown complete" in output
    assert postmaster_pid(pgdata) is None, "the embedded PostgreSQL is still running"


def test_day_one_commands_work_without_uv_on_path(tmp_path: Path) -> None:
    """The README's day-one commands, through dev.py, as right after the quick start."""
    env = embedded_env(tmp_path / "pg")

    def dev(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "dev.py", *args],
            input=stdin,
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    heads = dev("alembic", "heads")
    assert heads.returncode == 0, heads.stderr
    assert f"{head_revisions()[0]} (head)" in heads.stdout

    assert dev("alembic", "upgrade", "head").returncode == 0
    made = dev(
        "superuser", "root@example.com", "root", "--password-stdin", stdin="correct horse battery\n"
    )
    assert made.returncode == 0, made.stderr
    assert "created superuser root@example.com" in made.stdout

    query = dev("db", "psql", "-At", "-c", "SELECT username, is_superuser FROM users")
    assert query.returncode == 0, query.stderr
    assert query.stdout.strip() == "root|t"

    status = dev("db", "status")
    assert "stopped; used by processes none" in status.stdout  # psql's use ended with it
    assert str(tmp_path / "pg" / "log") in status.stdout
