from __future__ import annotations

import subprocess
import sys

import pytest

from backend.core.config import PROJECT_ROOT, Settings, SettingsError


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://app:s3cret@db:5432/app", "postgresql+asyncpg://app:s3cret@db:5432/app"),
        ("postgresql+asyncpg://app@db/app", "postgresql+asyncpg://app@db/app"),
        ("postgres://app@db/app", "postgresql+asyncpg://app@db/app"),
        (
            "postgresql://postgres:@/postgres?host=/var/run/postgresql",
            "postgresql+asyncpg://postgres:@/postgres?host=%2Fvar%2Frun%2Fpostgresql",
        ),
        # A managed database's URL as the provider prints it: libpq's sslmode becomes ssl.
        (
            "postgresql://app@db.example.com/app?sslmode=require",
            "postgresql+asyncpg://app@db.example.com/app?ssl=require",
        ),
    ],
)
def test_database_url_is_normalised_to_asyncpg(given: str, expected: str) -> None:
    assert Settings(database_url=given).database_url == expected


@pytest.mark.parametrize(
    ("given", "complaint"),
    [
        ("not a url", "DATABASE_URL is not a valid URL"),
        ("mysql://u@h/db", "DATABASE_URL must start with postgresql://"),
        ("postgresql://u@h", "DATABASE_URL names no database"),
        ("postgresql:///db", "DATABASE_URL names no host"),
    ],
)
def test_malformed_database_url_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, given: str, complaint: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", given)
    with pytest.raises(SettingsError, match=complaint):
        Settings.load()


def test_blank_database_url_means_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "  ")
    assert Settings.load().uses_embedded_db


def test_ignored_table_prefixes_come_from_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALEMBIC_IGNORE_TABLE_PREFIXES", "checkpoint, langgraph_")
    assert Settings.load().alembic_ignore_table_prefixes == ("checkpoint", "langgraph_")


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-c", "from backend.main import app"],
        [sys.executable, "-m", "alembic", "current"],
    ],
    ids=["app", "alembic"],
)
def test_startup_stops_on_a_malformed_database_url(command: list[str]) -> None:
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": "mysql://root@localhost/app"}
    result = subprocess.run(
        command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "DATABASE_URL must start with postgresql://" in result.stderr
