"""Cross-origin calls from browsers: none allowed by default, the listed origins only."""

from __future__ import annotations

import httpx
import pytest

APP = "https://app.example.com"
PREFLIGHT = {
    "Access-Control-Request-Method": "GET",
    "Access-Control-Request-Headers": "authorization",
}


async def test_no_origin_is_allowed_by_default(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"Origin": APP})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.settings(cors_origins=(APP,))
async def test_a_listed_origin_may_call_the_api_and_read_the_request_id(
    client: httpx.AsyncClient,
) -> None:
    preflight = await client.options("/api/v1/users/me", headers={"Origin": APP, **PREFLIGHT})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == APP
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()

    response = await client.get("/healthz", headers={"Origin": APP})
    assert response.headers["access-control-allow-origin"] == APP
    exposed = response.headers["access-control-expose-headers"].lower()
    assert "x-request-id" in exposed

    other = await client.options(
        "/api/v1/users/me", headers={"Origin": "https://evil.example", **PREFLIGHT}
    )
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers
