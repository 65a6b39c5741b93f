"""The benchmark at its tiny size, so it never rots: it runs, checks its responses, reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from backend.core.config import PROJECT_ROOT
from backend.main import MODULES
from tests.support import db

pytestmark = [pytest.mark.bench, pytest.mark.slow]


def test_tiny_benchmark_writes_the_report_and_chart(server: URL, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--size",
            "tiny",
            "--out",
            str(tmp_path),
            "--server-url",
            db.sync_url(server),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    figures = json.loads((tmp_path / "latest.json").read_text())
    report = (tmp_path / "latest.md").read_text()
    endpoints = [row["endpoint"] for row in figures["api"]]
    assert endpoints[0] == "GET /api/v1/users/me"
    assert endpoints[-1] == "GET /healthz"
    for row in figures["api"]:
        assert row["app"]["rps"] > 0
        assert row["baseline"]["rps"] > 0
        assert row["app"]["cpu_us"] > 0
        assert row["latency"]["app"]["requests"] > 0
    assert [row["workers"] for row in figures["mixed"]] == [1]
    for row in figures["mixed"]:
        assert row["rps"] > 0
        assert row["errors"] == 0, (row["failures"], result.stdout)
    for heading in (
        "## Targets",
        "## API against the raw baseline",
        "## Mixed load, and uvicorn workers",
        "## Migrations and start-up",
    ):
        assert heading in report
    assert (tmp_path / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Each module's part (bench/modules/<name>/), while the module is there.
    if "file" in MODULES:
        assert "GET /api/v1/files" in endpoints
        for storage in ("transfers", "transfers_s3"):  # local directory and S3 (rclone)
            assert figures[storage]["upload_mb_s"] > 0
            assert figures[storage]["download_mb_s"] > 0
        assert "## Uploads and downloads" in report
    if "knowledge_base" in MODULES:
        seeded = figures["seed"]["knowledge_base"]
        # The small knowledge base is searched exactly, the large one (above the bench's
        # SEARCH_EXACT_MAX_CHUNKS of 1,000) through the index.
        assert seeded["kb_chunks"] <= 1000 < seeded["large_kb_chunks"]
        assert endpoints[-3:-1] == [
            f"POST /api/v1/knowledge-bases/{{id}}/search (exact, {seeded['kb_chunks']:,} chunks)",
            "POST /api/v1/knowledge-bases/{id}/search "
            f"(HNSW index, {seeded['large_kb_chunks']:,} chunks)",
        ]
        assert {"single", "multi"} == set(figures["vectors"]["sets"])
        for data in figures["vectors"]["sets"].values():
            assert all(0 <= m["recall"] <= 1 for m in data["measurements"])
        assert figures["ingestion"]["chunks"] > 0
        assert "## Vector search" in report
        assert "## Ingestion" in report
