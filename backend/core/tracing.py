"""OpenTelemetry traces: one span per request (named by its route template), one per SQL
statement, one per outgoing HTTP call (the embedder's). Off unless OTEL_EXPORTER_OTLP_ENDPOINT
names a collector; then spans go there over OTLP/HTTP in batches from a background thread, so a
slow or absent collector never holds a request up.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

from fastapi.telemetry import TelemetryConfig

from backend.core.config import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from sqlalchemy.ext.asyncio import AsyncEngine

# Probes and scrapes: frequent, and nothing to learn from their spans.
UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})
# FastAPI's native telemetry, with nothing configured: not even looked for per request.
OFF: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def _untraced(scope: MutableMapping[str, Any]) -> bool:
    return scope.get("path") in UNTRACED


class Tracing:
    """The tracer provider and what it instruments; `stop()` flushes and undoes it."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider

    @classmethod
    def start(cls, settings: Settings) -> Tracing | None:
        """A provider exporting to the collector, and every outgoing httpx call traced; None
        when no collector is named."""
        if not settings.otel_exporter_otlp_endpoint:
            return None
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        endpoint = settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
        provider = TracerProvider(
            resource=Resource.create({SERVICE_NAME: settings.otel_service_name})
        )
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        HTTPXClientInstrumentor().instrument(tracer_provider=provider)
        return cls(provider)

    @staticmethod
    def fastapi_config(tracing: Tracing | None) -> TelemetryConfig:
        """`FastAPI(telemetry=...)`: FastAPI's own request spans, on this provider."""
        if tracing is None:
            return OFF
        return {
            **OFF,
            "tracing": True,
            "tracer_provider": tracing.provider,
            "exclude": _untraced,
            # FastAPI's spans for dependency solving, the endpoint and serialization: three
            # more per request, most of tracing's cost on a cheap endpoint. Turn them on here
            # to see inside a slow handler.
            "operation_spans": False,
        }

    def trace_sql(self, engine: AsyncEngine) -> None:
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        # Its declared range stops below SQLAlchemy 2.1, whose engine events it hooks are
        # unchanged: the test suite checks the SQL spans arrive.
        SQLAlchemyInstrumentor().instrument(
            engine=engine.sync_engine, tracer_provider=self.provider, skip_dep_check=True
        )

    def stop(self) -> None:
        """Undo the instrumentation and export what is still batched (blocking: call it from a
        thread, not the event loop)."""
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        SQLAlchemyInstrumentor().uninstrument()
        HTTPXClientInstrumentor().uninstrument()
        self.provider.shutdown()
