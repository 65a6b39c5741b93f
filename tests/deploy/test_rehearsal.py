"""Rehearse a rollout of the prod overlay: three replicas start at once against one database."""

from __future__ import annotations

import asyncio
import secrets
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL

from backend.db.migrations import SCRIPT_LOCATION, head_revisions
from tests.support import db
from tests.support.alembic_cli import chain_plus
from tests.support.artifacts import K8S, Manifest, find, load_yaml, render
from tests.support.files import files_in
from tests.support.kubelet import Pod
from tests.support.modules import needs
from tests.support.s3 import S3Server

pytestmark = [pytest.mark.deploy, pytest.mark.slow]

REPLICAS = 3


@pytest.fixture(scope="module")
def prod() -> list[Manifest]:
    return render(K8S / "overlays" / "prod")


def secret_for(url: URL) -> dict[str, str]:
    """The Secret a cluster would hold: the template's keys, with this test's values."""
    values = {"DATABASE_URL": db.sync_url(url), "JWT_SECRET": secrets.token_urlsafe(48)}
    template = load_yaml(K8S / "base" / "secret.template.yaml")["stringData"]
    assert set(template) == set(values)
    return values


def replicas(
    prod: list[Manifest],
    url: URL,
    tmp_path: Path,
    s3: S3Server,
    deployment: str = "backend",
    count: int = REPLICAS,
    **overrides: str,
) -> tuple[dict[str, Any], list[Pod]]:
    spec: dict[str, Any] = find(prod, "Deployment", deployment)["spec"]["template"]["spec"]
    # Each pod has its own /tmp; they share the bucket (the test's S3 server stands in for it).
    bucket = {"S3_ENDPOINT_URL": s3.endpoint, "S3_BUCKET": s3.bucket, "S3_PREFIX": tmp_path.name}
    secret = secret_for(url) | s3.credentials
    pods = []
    for n in range(count):
        volumes = {
            v["name"]: tmp_path / deployment / f"pod{n}" / v["name"] for v in spec["volumes"]
        }
        for path in volumes.values():
            path.mkdir(parents=True, exist_ok=True)
        pods.append(Pod(spec, prod, secret, volumes, bucket | overrides))
    return spec, pods


@needs("file", "knowledge_base")
async def test_three_replicas_migrate_once_and_all_become_ready(
    prod: list[Manifest], empty_db: URL, tmp_path: Path, s3: S3Server
) -> None:
    spec, api_pods = replicas(prod, empty_db, tmp_path, s3)
    worker_spec, workers = replicas(prod, empty_db, tmp_path, s3, "backend-worker", 1)
    assert spec["initContainers"][0]["command"] == ["alembic", "upgrade", "head"]
    assert worker_spec["initContainers"][0]["command"] == ["alembic", "upgrade", "head"]
    readiness = spec["containers"][0]["readinessProbe"]["httpGet"]["path"]
    pods = [*api_pods, *workers]
    try:
        await asyncio.gather(*(asyncio.to_thread(pod.start) for pod in pods))
        for pod in pods:
            assert [r.returncode for r in pod.init_results] == [0], pod.logs()
        logs = "".join(pod.logs() for pod in pods)
        revisions = [s.revision for s in ScriptDirectory(str(SCRIPT_LOCATION)).walk_revisions()]
        assert db.upgrades_applied(logs) == dict.fromkeys(revisions, 1)
        assert await db.current_revisions(empty_db) == set(head_revisions())

        statuses = await asyncio.gather(*(pod.wait_ready(readiness) for pod in pods))
        assert statuses == [200] * len(pods)
        pods = api_pods
        # The replicas share the database, the JWT secret and the bucket.
        account = {"email": "ro@example.com", "username": "rollout", "password": "horse battery"}
        async with httpx.AsyncClient() as client:
            first, last = (f"http://127.0.0.1:{p.port}/api/v1" for p in (pods[0], pods[-1]))
            assert (await client.post(f"{first}/auth/register", json=account)).status_code == 201
            login = await client.post(
                f"{last}/auth/token",
                data={"username": account["email"], "password": account["password"]},
            )
            assert login.status_code == 200, login.text
            auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
            upload = await client.post(
                f"{first}/files", headers=auth, files={"file": ("a.txt", b"shared bucket")}
            )
            assert upload.status_code == 201, upload.text
            download = await client.get(f"{last}/files/{upload.json()['id']}/content", headers=auth)
            assert download.content == b"shared bucket"
            assert len(files_in(s3.folder(tmp_path.name))) == 1

            # The API's pods queue a document; the worker's pod (its own process) ingests it.
            kb = await client.post(f"{first}/knowledge-bases", headers=auth, json={"name": "kb"})
            document = await client.post(
                f"{last}/knowledge-bases/{kb.json()['id']}/documents",
                headers=auth,
                json={"file_id": upload.json()["id"]},
            )
            assert document.status_code == 202, document.text
            url = f"http://127.0.0.1:{pods[0].port}{document.headers['location']}"
            status = await wait_for_status(client, url, auth)
            assert status == "ready"
            health = await client.get(f"http://127.0.0.1:{workers[0].port}/healthz")
            assert health.json()["loops"]["ingestion"]["processed"] == 1
    finally:
        exit_codes = [pod.stop() for pod in [*api_pods, *workers]]
    # SIGTERM on a rollout is a graceful shutdown (uvicorn then re-raises the signal it got).
    assert exit_codes == [-signal.SIGTERM] * (REPLICAS + 1)
    for pod in [*api_pods, *workers]:
        assert "Application shutdown complete." in pod.logs()


async def wait_for_status(client: httpx.AsyncClient, url: str, auth: dict[str, str]) -> str:
    """The document's status once it is no longer queued or being processed."""
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        status = str((await client.get(url, headers=auth)).json()["status"])
        if status not in ("pending", "processing"):
            return status
        assert asyncio.get_running_loop().time() < deadline, status
        await asyncio.sleep(0.2)


async def test_a_failing_migration_keeps_every_replica_from_serving(
    prod: list[Manifest], migrated_db: URL, tmp_path: Path, s3: S3Server
) -> None:
    previous = set(head_revisions())
    (head,) = previous
    # A test-only script location: the real chain plus a revision that fails halfway through.
    ini = chain_plus(
        tmp_path,
        revision="broken0000test",
        down_revision=head,
        upgrade=(
            'op.create_table("template_test_half_done", '
            'sa.Column("id", sa.Integer, primary_key=True)); '
            'op.execute("SELECT 1 / 0")'
        ),
    )
    _, pods = replicas(prod, migrated_db, tmp_path, s3, ALEMBIC_CONFIG=str(ini))
    try:
        await asyncio.gather(*(asyncio.to_thread(pod.start) for pod in pods))
        for pod in pods:
            [init] = pod.init_results
            assert init.returncode != 0
            assert "division by zero" in init.stderr
            assert "broken0000test" in init.stderr
            assert pod.app is None
            # Nothing listens where the app would have.
            async with httpx.AsyncClient() as client:
                with pytest.raises(httpx.ConnectError):
                    await client.get(f"http://127.0.0.1:{pod.port}/healthz", timeout=2)
    finally:
        for pod in pods:
            pod.stop()
    # The database is where it was: the revision and its half-made table rolled back.
    assert await db.current_revisions(migrated_db) == previous
    assert "template_test_half_done" not in await db.table_names(migrated_db)
