"""`/metrics` as Prometheus scrapes it: the request just made, the pool, the schema revision."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.core.state import app_state
from backend.db.migrations import head_revisions
from backend.db.session import Database


def samples(body: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def value(body: str, name: str, **labels: str) -> float:
    return samples(body).get((name, frozenset(labels.items())), 0.0)


async def test_the_request_just_made_is_counted_by_route_template(
    client: httpx.AsyncClient,
) -> None:
    route = "/api/v1/users/{user_id}"
    before = (await client.get("/metrics")).text
    missing = await client.delete("/api/v1/users/8f3b0c1e-0000-4000-8000-000000000000")
    assert missing.status_code == 401
    after = await client.get("/metrics")
    assert after.status_code == 200
    assert after.headers["content-type"].startswith("text/plain")
    labels = {"method": "DELETE", "route": route, "status": "401"}
    assert value(after.text, "http_requests_total", **labels) == (
        value(before, "http_requests_total", **labels) + 1
    )
    timed = {"method": "DELETE", "route": route}
    assert value(after.text, "http_request_duration_seconds_count", **timed) >= 1
    # A path no route knows is one label, whatever the path; so is a method HTTP lacks.
    await client.request("BREW", "/api/v1/users/me")
    assert await counted(client, "OTHER", "/api/v1/users/me", "405") >= 1
    await client.get("/no/such/path/12345")
    assert await counted(client, "GET", "<unmatched>", "404") >= 1


async def counted(client: httpx.AsyncClient, method: str, route: str, status: str) -> float:
    """`http_requests_total` for these labels, scraped now."""
    body = (await client.get("/metrics")).text
    return value(body, "http_requests_total", method=method, route=route, status=status)


async def test_the_schema_revision_is_at_head(client: httpx.AsyncClient) -> None:
    body = (await client.get("/metrics")).text
    head = ",".join(sorted(head_revisions()))
    assert value(body, "db_schema_at_head") == 1
    assert value(body, "db_schema_revision_info", current=head, head=head) == 1


@pytest.mark.settings(db_pool_size=1, db_pool_timeout=5)
async def test_the_pool_shows_connections_in_use_and_requests_waiting(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    engine = app_state(app).get(Database).engine
    async with engine.connect() as holder:
        await holder.execute(text("SELECT 1"))  # the pool's one connection, held
        waiter = asyncio.create_task(_query(engine))
        await asyncio.sleep(0.2)
        body = (await client.get("/metrics")).text
        assert value(body, "db_pool_connections", state="in_use") == 1
        assert value(body, "db_pool_connections", state="waiting") >= 1
    await waiter
    body = (await client.get("/metrics")).text
    assert value(body, "db_pool_connections", state="in_use") == 0
    assert value(body, "db_pool_connections", state="waiting") == 0


async def _query(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
