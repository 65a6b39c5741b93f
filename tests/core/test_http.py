"""The HTTP contract every endpoint shares: JSON errors, HEAD, Allow, the published schema."""

from __future__ import annotations

import uuid

import httpx
from fastapi import FastAPI
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.config import Settings
from backend.main import MODULES, create_app
from tests.modules.user.factories import user_with_token
from tests.support.server import serving
from tests.support.settings import configured

API = "/api/v1"


async def test_head_answers_wherever_get_does(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    _, auth = await user_with_token(client, session, is_superuser=True)
    for path in ("/healthz", f"{API}/users/me", f"{API}/users"):
        get = await client.get(path, headers=auth)
        head = await client.head(path, headers=auth)
        assert head.status_code == get.status_code == 200, path
        assert head.content == b""
        assert head.headers["content-type"] == get.headers["content-type"]


async def test_405_names_every_method_the_path_has(client: httpx.AsyncClient) -> None:
    response = await client.put(f"{API}/users/me")
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET, HEAD, PATCH"
    assert response.json() == {"detail": "Method Not Allowed", "code": "method_not_allowed"}


async def test_an_unexpected_error_is_json_too(app: FastAPI) -> None:
    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/template-test-boom", boom)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        response = await http.get("/template-test-boom")
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error", "code": "internal_error"}


async def test_database_down_is_503_with_retry_after(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    _, auth = await user_with_token(client, session)  # a valid token, for an app whose DB is gone
    unreachable = URL.create("postgresql+asyncpg", host="127.0.0.1", port=1, database="x")
    async with serving(unreachable) as down:
        response = await down.get(f"{API}/users/me", headers=auth)
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert "database is unavailable" in response.json()["detail"]


async def test_the_published_schema_says_what_errors_look_like(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    paths = schema["paths"]

    # The 422 the handler sends, published as such.
    published = schema["components"]["schemas"]["HTTPValidationError"]
    assert published["properties"]["detail"]["type"] == "string"
    assert published["properties"]["errors"]["type"] == "array"
    bad = await client.post(f"{API}/auth/register", json={"email": 1})
    assert bad.status_code == 422
    assert set(bad.json()) == set(published["required"]) == {"detail", "code", "errors"}
    assert isinstance(bad.json()["detail"], str)
    assert all({"loc", "msg", "type"} <= set(e) for e in bad.json()["errors"])

    # Each operation declares what its dependencies and guards can answer.
    expected = {
        ("get", f"{API}/users"): {"401", "403"},
        ("post", f"{API}/auth/token"): {"401", "429", "422", "408", "413"},
    }
    if "file" in MODULES:
        expected[("get", f"{API}/files")] = {"401", "403", "503"}
        expected[("get", f"{API}/files/{{file_id}}")] = {"401", "404", "422"}
        expected[("post", f"{API}/files")] = {"401", "408", "413", "507"}
    if "knowledge_base" in MODULES:
        expected[("post", f"{API}/knowledge-bases/{{kb_id}}/search")] = {"401", "404", "422", "502"}
    for (method, path), codes in expected.items():
        declared = set(paths[path][method]["responses"])
        assert codes <= declared, (method, path, codes - declared)
        for code in codes - {"422"}:
            content = paths[path][method]["responses"][code]["content"]["application/json"]
            assert content["schema"] == {"$ref": "#/components/schemas/ErrorBody"}


def test_docs_setting_default_follows_the_environment() -> None:
    assert Settings(environment="development").docs_enabled
    assert not Settings(environment="production").docs_enabled
    production = configured(environment="production", jwt_secret="x" * 32)
    assert create_app(*production).openapi_url is None


async def test_every_error_names_a_stable_code(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    _, admin = await user_with_token(client, session, is_superuser=True)
    cases = {
        "not_authenticated": client.get(f"{API}/users/me"),
        "user_not_found": client.patch(f"{API}/users/{uuid.uuid4()}", headers=admin, json={}),
        "validation_error": client.patch(f"{API}/users/nope", headers=admin, json={}),
        "not_found": client.get("/no-such-page"),
        "method_not_allowed": client.put(f"{API}/users"),
        "invalid_credentials": client.post(
            f"{API}/auth/token", data={"username": "x", "password": "y"}
        ),
        "body_too_large": client.post(f"{API}/auth/register", content=b"x" * 3_000_000),
    }
    for code, request in cases.items():
        body = (await request).json()
        assert body["code"] == code, body
        assert isinstance(body["detail"], str)
