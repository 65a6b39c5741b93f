"""Adding documents in tests: the API queues them; the test's app has no worker running (its
requests share the test's transaction, which a worker's own connections could not see), so
the test runs the same ingestion code itself, on that transaction, until nothing is left."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from backend.core.state import app_state
from backend.modules.knowledge_base.ingestion import Ingestion


def app_of(client: httpx.AsyncClient) -> FastAPI:
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    app = transport.app
    assert isinstance(app, FastAPI)
    return app


async def drain(client: httpx.AsyncClient) -> int:
    """Process every queued document now; how many there were."""
    return await app_state(app_of(client)).get(Ingestion).drain()


async def add_document(
    client: httpx.AsyncClient, headers: dict[str, str], kb_url: str, body: dict[str, Any]
) -> httpx.Response:
    """POST a document and let it be processed: the document as it ended up (GET: `ready` or
    `failed`), or the refusal when the API did not accept it."""
    response = await client.post(f"{kb_url}/documents", headers=headers, json=body)
    if response.status_code != 202:
        return response
    assert response.json()["status"] == "pending"
    await drain(client)
    return await client.get(response.headers["location"], headers=headers)
