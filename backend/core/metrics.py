"""Request metrics in Prometheus form: a count and a latency histogram per route template,
method and status, observed by `RecordRequests` (backend/core/logs.py) for every request.

They live in prometheus_client's default registry, which `/metrics` (backend/metrics.py)
serves with the database pool and schema gauges. One registry per process: run one uvicorn
worker per container (as the Kubernetes manifests do) and let Prometheus add the pods up.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
DURATION = Histogram(
    "http_request_duration_seconds",
    "Time from the request's arrival to its last response byte, by method and route template.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


def observe(method: str, route: str, status: int, seconds: float) -> None:
    REQUESTS.labels(method, route, str(status)).inc()
    DURATION.labels(method, route).observe(seconds)
