"""What a hostile or careless client can send: every answer a clear 4xx, nothing stored."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.state import app_state
from backend.main import create_app
from backend.modules.file.models import File
from backend.modules.file.storage import LocalStorage, Storage
from backend.modules.knowledge_base.models import KnowledgeBase
from backend.modules.user.models import User
from tests.modules.file.fixtures import BOTH_BACKENDS
from tests.modules.knowledge_base.ingest import add_document
from tests.modules.user.factories import PASSWORD, create_user, login, user_with_token
from tests.support.files import files_in
from tests.support.settings import configured

API = "/api/v1"
NUL = "a\u0000b"
SURROGATE = '"a\\ud800b"'  # raw JSON: a lone surrogate escape


async def post_raw(
    client: httpx.AsyncClient, path: str, body: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await client.post(
        path, content=body.encode(), headers={"content-type": "application/json", **(headers or {})}
    )


async def count(session: AsyncSession, model: type[User | File | KnowledgeBase]) -> int:
    return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_nul_and_lone_surrogates_are_422_everywhere(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    _, auth = await user_with_token(client, session)
    kb = (await client.post(f"{API}/knowledge-bases", headers=auth, json={"name": "kb"})).json()
    users, kbs = await count(session, User), await count(session, KnowledgeBase)
    bodies = {
        f"{API}/auth/register": '{"email": %s, "username": "eve_x", "password": "long enough"}',
        f"{API}/knowledge-bases": '{"name": %s}',
        f"{API}/knowledge-bases/{kb['id']}/documents": '{"title": "t", "text": %s}',
        f"{API}/knowledge-bases/{kb['id']}/search": '{"query": %s}',
    }
    for path, template in bodies.items():
        for bad, field_value in (("NUL", json.dumps(NUL)), ("surrogate", SURROGATE)):
            response = await post_raw(client, path, template % field_value, auth)
            assert response.status_code == 422, (path, bad, response.text)
            detail = response.json()["detail"]
            assert any(w in detail for w in ("NUL", "surrogate", "control", "unicode")), detail
    for payload in ({"description": NUL}, {"name": NUL}):
        patched = await client.patch(
            f"{API}/knowledge-bases/{kb['id']}", headers=auth, json=payload
        )
        assert patched.status_code == 422, patched.text
    me = await client.patch(f"{API}/users/me", headers=auth, json={"username": NUL})
    assert me.status_code == 422
    # A login with a NUL is nobody: the same 401 as any wrong login.
    nul_login = await client.post(f"{API}/auth/token", data={"username": NUL, "password": "x"})
    assert nul_login.status_code == 401
    assert (await count(session, User), await count(session, KnowledgeBase)) == (users, kbs)


async def test_a_text_file_with_nul_bytes_is_not_a_document(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    _, auth = await user_with_token(client, session)
    kb = (await client.post(f"{API}/knowledge-bases", headers=auth, json={"name": "kb"})).json()
    upload = await client.post(
        f"{API}/files", headers=auth, files={"file": ("bin.txt", b"text\x00more", "text/plain")}
    )
    added = await add_document(
        client, auth, f"{API}/knowledge-bases/{kb['id']}", {"file_id": upload.json()["id"]}
    )
    assert added.json()["status"] == "failed"
    assert "NUL" in added.json()["error"]


async def test_non_finite_numbers_in_an_invalid_body_get_a_422(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    _, auth = await user_with_token(client, session)
    kb = (await client.post(f"{API}/knowledge-bases", headers=auth, json={"name": "kb"})).json()
    for number in ("NaN", "Infinity", "-Infinity", "1e400"):
        response = await post_raw(
            client, f"{API}/knowledge-bases/{kb['id']}/search", f'{{"query": {number}}}', auth
        )
        assert response.status_code == 422, (number, response.text)
        assert response.json()["errors"][0]["loc"] == ["body", "query"]


async def test_out_of_range_listing_and_long_part_type_are_handled(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    _, auth = await user_with_token(client, session)
    _, root_auth = await user_with_token(client, session, is_superuser=True)
    for path, headers in ((f"{API}/files", auth), (f"{API}/users", root_auth)):
        huge = await client.get(path, headers=headers, params={"offset": 2**63})
        assert huge.status_code == 422, huge.text
        last = await client.get(path, headers=headers, params={"offset": 2**63 - 1})
        assert last.status_code == 200
        assert last.json()["items"] == []

    long_type = "text/" + "x" * 300
    upload = await client.post(
        f"{API}/files", headers=auth, files={"file": ("a.txt", b"hello", long_type)}
    )
    assert upload.status_code == 201, upload.text
    assert upload.json()["content_type"] == "application/octet-stream"


async def test_punctuation_only_documents_and_queries_score_as_numbers(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    _, auth = await user_with_token(client, session)
    kb = (await client.post(f"{API}/knowledge-bases", headers=auth, json={"name": "kb"})).json()
    for text in ("?!?! ... ---", "Alembic migrations upgrade the schema."):
        added = await add_document(
            client, auth, f"{API}/knowledge-bases/{kb['id']}", {"title": "t", "text": text}
        )
        assert added.json()["status"] == "ready", added.text
    for query in ("???", "schema migrations"):
        found = await client.post(
            f"{API}/knowledge-bases/{kb['id']}/search", headers=auth, json={"query": query}
        )
        assert found.status_code == 200
        scores = [r["score"] for r in found.json()["results"]]
        assert len(scores) == 2
        assert all(isinstance(score, float) for score in scores), scores


@pytest.mark.parametrize(
    ("email", "username", "problem"),
    [
        (
            "\uff41\uff44\uff41@example.com",
            "ada_fw",
            None,
        ),  # full-width: NFKC makes it ada@example.com
        ("ada@example.com", "\uff41\uff44\uff41", None),  # full-width username: NFKC makes it "ada"
        ("\u0430da@example.com", "ada_cyr", "mixes Latin and Cyrillic"),  # Cyrillic a
        ("ada\u200b@example.com", "ada_zw", "invisible"),  # zero-width space
        ("ada@example.com\u202e", "ada_rlo", "invisible"),  # right-to-left override
        ("ada2@example.com", "ad\u200da", "invisible"),  # zero-width joiner in the username
    ],
)
async def test_look_alike_accounts_are_the_same_account_or_refused(
    client: httpx.AsyncClient, session: AsyncSession, email: str, username: str, problem: str | None
) -> None:
    await create_user(session, email="ada@example.com", username="ada")
    response = await client.post(
        f"{API}/auth/register", json={"email": email, "username": username, "password": PASSWORD}
    )
    if problem is None:
        assert response.status_code == 409, response.text  # the account that already exists
    else:
        assert response.status_code == 422, response.text
        assert problem in response.json()["detail"]
    assert await count(session, User) == 1
    # The full-width form logs in to the one account.
    assert (
        await client.get(f"{API}/users/me", headers=await login(client, "\uff41\uff44\uff41"))
    ).is_success


async def test_password_change_and_deactivation_end_earlier_tokens(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    user, old = await user_with_token(client, session)
    changed = await client.post(
        f"{API}/users/me/password",
        headers=old,
        json={"current_password": PASSWORD, "new_password": "a brand new one"},
    )
    assert changed.status_code == 204
    assert (await client.get(f"{API}/users/me", headers=old)).status_code == 401
    new = await login(client, user.username, "a brand new one")
    assert (await client.get(f"{API}/users/me", headers=new)).status_code == 200

    _, root = await user_with_token(client, session, is_superuser=True)
    disabled = await client.patch(f"{API}/users/{user.id}", headers=root, json={"is_active": False})
    assert disabled.status_code == 200
    assert disabled.json()["is_active"] is False
    assert (await client.get(f"{API}/users/me", headers=new)).status_code == 401
    assert (
        await client.patch(f"{API}/users/{uuid.uuid4()}", headers=root, json={})
    ).status_code == 404
    # Not a superuser: no say over other accounts.
    assert (await client.delete(f"{API}/users/{user.id}", headers=old)).status_code == 401


@BOTH_BACKENDS
async def test_deleting_an_account_takes_its_files_and_knowledge_bases(
    client: httpx.AsyncClient, session: AsyncSession, storage_dir: Path
) -> None:
    user, auth = await user_with_token(client, session)
    upload = await client.post(f"{API}/files", headers=auth, files={"file": ("a.txt", b"bytes")})
    assert upload.status_code == 201
    await client.post(f"{API}/knowledge-bases", headers=auth, json={"name": "kb"})
    blobs = files_in(storage_dir)
    assert len(blobs) == 1

    assert (await client.delete(f"{API}/users/me", headers=auth)).status_code == 204

    assert await session.scalar(select(func.count()).where(User.id == user.id)) == 0
    assert await count(session, File) == 0
    assert await count(session, KnowledgeBase) == 0
    assert not blobs[0].exists()
    assert (await client.get(f"{API}/users/me", headers=auth)).status_code == 401


async def test_docs_are_off_in_production_unless_asked_for() -> None:
    secret = "x" * 40
    for settings, served in (
        (configured(environment="production", jwt_secret=secret), False),
        (configured(environment="production", jwt_secret=secret, api_docs=True), True),
        (configured(environment="development"), True),
    ):
        app = create_app(*settings)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            for path in ("/docs", "/openapi.json"):
                assert ((await http.get(path)).status_code == 200) is served, (path, settings)


@pytest.mark.settings(storage_quota_bytes=3000)
@BOTH_BACKENDS
async def test_each_user_keeps_files_within_the_quota(
    client: httpx.AsyncClient, session: AsyncSession, storage_dir: Path
) -> None:
    _, auth = await user_with_token(client, session)
    _, other = await user_with_token(client, session)

    async def upload(headers: dict[str, str], size: int) -> httpx.Response:
        files = {"file": ("f.bin", b"x" * size)}
        return await client.post(f"{API}/files", headers=headers, files=files)

    assert (await upload(auth, 2000)).status_code == 201
    over = await upload(auth, 1500)
    assert over.status_code == 413
    assert "quota of 3000 bytes (2000 bytes used)" in over.json()["detail"]
    assert (await upload(auth, 1000)).status_code == 201  # exactly full
    assert (await upload(other, 2500)).status_code == 201  # quotas are per user
    assert await count(session, File) == 3
    assert len(files_in(storage_dir)) == 3


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A real filesystem of 64 KiB (tmpfs), as the storage directory."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


async def test_a_full_disk_is_507_and_leaves_nothing(
    client: httpx.AsyncClient, session: AsyncSession, app: FastAPI, full_disk: Path
) -> None:
    app_state(app).provide(Storage, LocalStorage(full_disk))
    _, auth = await user_with_token(client, session)
    files = {"file": ("big.bin", b"x" * 200_000)}

    response = await client.post(f"{API}/files", headers=auth, files=files)

    assert response.status_code == 507
    assert "no space left" in response.json()["detail"]
    assert files_in(full_disk) == []
    assert await count(session, File) == 0


@pytest.mark.settings(login_max_failures=3, login_failure_window=60)
async def test_failed_logins_are_throttled_per_account_and_per_address(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    await create_user(session, username="victim")
    for _ in range(3):
        wrong = await client.post(f"{API}/auth/token", data={"username": "victim", "password": "x"})
        assert wrong.status_code == 401
    blocked = await client.post(
        f"{API}/auth/token", data={"username": "VICTIM", "password": PASSWORD}
    )
    assert blocked.status_code == 429  # even the right password, until the window ends
    assert 0 < int(blocked.headers["Retry-After"]) <= 60
    assert "try again in" in blocked.json()["detail"]


@pytest.mark.settings(login_max_failures=3, login_failure_window=60)
async def test_one_address_guessing_many_accounts_is_throttled(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    await create_user(session, username="fresh")
    for name in ("a_1", "b_2", "c_3"):
        await client.post(f"{API}/auth/token", data={"username": name, "password": "x"})
    # This client's address is now over the limit, for an account it never tried.
    blocked = await client.post(f"{API}/auth/token", data={"username": "fresh", "password": "x"})
    assert blocked.status_code == 429
