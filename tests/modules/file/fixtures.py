"""The file module's fixtures: the storage backend a test's app uses (a local directory, or a
bucket on the session's S3-compatible server), for its tests and those of the modules above."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI

from backend.core.state import app_state
from backend.modules.file.storage import Storage
from tests.support.s3 import S3Server

UPLOAD_LIMIT = 1_000_000

BOTH_BACKENDS = pytest.mark.parametrize("storage_backend", ["local", "s3"], indirect=True)


@pytest.fixture
def storage_backend(request: pytest.FixtureRequest) -> str:
    """STORAGE_BACKEND for the test's app: `local` unless parametrized (`BOTH_BACKENDS`)."""
    return str(getattr(request, "param", "local"))


@pytest.fixture
def storage_dir(request: pytest.FixtureRequest, storage_backend: str, tmp_path: Path) -> Path:
    """Where the app's blobs land on disk, whichever the backend (rclone keeps real files)."""
    if storage_backend == "s3":
        server: S3Server = request.getfixturevalue("s3")
        return server.folder(tmp_path.name)
    return tmp_path / "files"


@pytest.fixture
def app_settings(
    app_settings: dict[str, object],
    request: pytest.FixtureRequest,
    storage_backend: str,
    storage_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, object]:
    """The test's app keeps its blobs in `storage_dir`, under UPLOAD_LIMIT per upload."""
    settings = {**app_settings, "max_upload_bytes": UPLOAD_LIMIT}
    if storage_backend != "s3":
        return {**settings, "file_storage_dir": storage_dir}
    server: S3Server = request.getfixturevalue("s3")
    for name, value in server.credentials.items():
        monkeypatch.setenv(name, value)
    return {
        **settings,
        "storage_backend": "s3",
        "s3_bucket": server.bucket,
        "s3_endpoint_url": server.endpoint,
        "s3_prefix": storage_dir.name,
    }


@pytest.fixture
def storage(app: FastAPI) -> Storage:
    """The blob storage the test's app uses."""
    return app_state(app).get(Storage)
