"""OpenTelemetry traces, exported over OTLP/HTTP to a collector on loopback that decodes them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from sqlalchemy.engine import URL

from backend.core.state import app_state
from backend.core.tracing import Tracing
from backend.main import create_app
from tests.modules.knowledge_base.test_embeddings import stub as embeddings
from tests.modules.user.factories import PASSWORD
from tests.support import db
from tests.support.loopback import read_body, respond, serve_asgi
from tests.support.settings import configured

received: list[tuple[str, Span, dict[str, Any]]] = []  # (service name, span, its attributes)


def _value(any_value: Any) -> Any:
    return getattr(any_value, any_value.WhichOneof("value"))


async def collector(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """OTLP/HTTP's trace endpoint, as a collector serves it: protobuf in, 200 out."""
    assert (scope["method"], scope["path"]) == ("POST", "/v1/traces")
    request = ExportTraceServiceRequest.FromString(await read_body(receive))
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attributes = {a.key: _value(a.value) for a in span.attributes}
                received.append((resource["service.name"], span, attributes))
    await respond(send, 200, b"", b"application/x-protobuf")


@pytest.fixture
async def collector_url() -> AsyncIterator[str]:
    received.clear()
    async with serve_asgi(collector) as url:
        yield url


async def test_requests_sql_and_outgoing_http_are_traced_when_a_collector_is_named(
    collector_url: str, migrated_db: URL, tmp_path: Path
) -> None:
    async with serve_asgi(embeddings) as embedder:
        app = create_app(
            *configured(
                database_url=db.sync_url(migrated_db),
                file_storage_dir=tmp_path,
                otel_exporter_otlp_endpoint=collector_url,
                otel_service_name="backend-under-test",
                embedding_provider="openai",
                embedding_base_url=f"{embedder}/v1",
            )
        )
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://t") as client,
        ):
            account = {"email": "t@example.com", "username": "tracer", "password": PASSWORD}
            assert (await client.post("/api/v1/auth/register", json=account)).status_code == 201
            login = await client.post(
                "/api/v1/auth/token", data={"username": account["email"], "password": PASSWORD}
            )
            auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
            kb = await client.post("/api/v1/knowledge-bases", headers=auth, json={"name": "k"})
            search = await client.post(
                f"/api/v1/knowledge-bases/{kb.json()['id']}/search",
                headers=auth,
                json={"query": "where do traces go", "top_k": 3},
            )
            assert search.status_code == 200, search.text
            assert (await client.get("/healthz")).status_code == 200
        # Leaving the lifespan flushes what is still batched.

    assert {service for service, _, _ in received} == {"backend-under-test"}
    by_id = {span.span_id: span for _, span, _ in received}
    servers = {s.name: s for _, s, _ in received if s.kind == Span.SPAN_KIND_SERVER}
    search_span = servers["POST /api/v1/knowledge-bases/{kb_id}/search"]
    assert "GET /healthz" not in servers  # probes are not traced

    def in_search(span: Span) -> bool:
        while span.parent_span_id:
            if span.parent_span_id == search_span.span_id:
                return True
            span = by_id[span.parent_span_id]
        return False

    sql = [(s, a) for _, s, a in received if a.get("db.system.name", a.get("db.system"))]
    assert any(in_search(span) for span, _ in sql), "no SQL span under the search request"
    outgoing = [
        (s, a)
        for _, s, a in received
        if s.kind == Span.SPAN_KIND_CLIENT
        and "/v1/embeddings" in str(a.get("url.full", a.get("http.url")))
    ]
    assert outgoing, "no span for the call to the embedder"
    assert all(in_search(span) for span, _ in outgoing)
    assert all(span.trace_id == search_span.trace_id for span, _ in outgoing)
    # Nothing secret rides along: not the password, not the token.
    dumped = b"".join(span.SerializeToString() for _, span, _ in received)
    assert PASSWORD.encode() not in dumped
    assert login.json()["access_token"].encode() not in dumped


async def test_nothing_is_traced_without_a_collector(migrated_db: URL, tmp_path: Path) -> None:
    app = create_app(*configured(database_url=db.sync_url(migrated_db), file_storage_dir=tmp_path))
    assert app_state(app).find(Tracing) is None
