"""Request metrics in Prometheus form: a count and a latency histogram per route template,
method and status, observed by `RecordRequests` (backend/core/logs.py) for every request.

They live in prometheus_client's default registry, which `/metrics` (backend/metrics.py)
serves with the database pool and schema gauges. One registry per process: run one uvicorn
worker per container (as the Kubernetes manifests do) and let Prometheus add the pods up.
"""

from __future__ import annotations

from typing import Any

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


# The labelled children, found once per label set (`labels()` locks and builds a key each time).
_counters: dict[tuple[str, str, int], Any] = {}
_timers: dict[tuple[str, str], Any] = {}


# Any token is a method to HTTP: the others are one label, or a client could mint series.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def observe(method: str, route: str, status: int, seconds: float) -> None:
    if method not in METHODS:
        method = "OTHER"
    counter = _counters.get((method, route, status))
    if counter is None:
        counter = _counters[method, route, status] = REQUESTS.labels(method, route, str(status))
    timer = _timers.get((method, route))
    if timer is None:
        timer = _timers[method, route] = DURATION.labels(method, route)
    counter.inc()
    timer.observe(seconds)
