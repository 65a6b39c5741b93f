"""The app against the raw baseline, endpoint by endpoint.

Throughput: wrk at a fixed number of connections, the two servers alternated, medians. Each run
also records the server's CPU time per request and every core's busy share, so a saturated load
core (wrk and PostgreSQL share it) shows instead of quietly flattering a ratio. Latency: a fixed
request rate below both servers' capacity (open loop), the same for both: at full load a p99
only restates throughput.
"""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path
from typing import Any

from bench import client
from bench.load import Endpoint, wrk
from bench.modules import mounted
from bench.processes import (
    LOAD_CORE,
    SERVER_CORE,
    Server,
    core_busy,
    core_times,
    on_load_core,
    pinned,
    start_server,
)
from bench.seed import Seed
from bench.sizes import Size


def endpoints(seed: Seed) -> list[Endpoint]:
    """The caller's own record, each module's endpoints (bench/modules/), the liveness probe."""
    return [
        Endpoint("GET /api/v1/users/me", "GET", "/api/v1/users/me", seed.auth),
        *(endpoint for part in mounted().values() for endpoint in part.endpoints(seed)),
        Endpoint("GET /healthz", "GET", "/healthz", {}),
    ]


def run_once(
    server: Server, endpoint: Endpoint, seconds: int, size: Size, workdir: Path
) -> dict[str, float]:
    cpu, cores = server.cpu_seconds(), core_times()
    result = wrk(
        server.base_url, endpoint, seconds, size.connections, workdir, pinned(LOAD_CORE, [])
    )
    cpu_used, busy = server.cpu_seconds() - cpu, core_busy(cores, core_times())
    requests = result.rps * seconds
    return {
        "rps": result.rps,
        "p99_ms": result.p99_ms,
        "cpu_us": 1e6 * cpu_used / requests if requests else 0.0,
        "server_core": busy[int(SERVER_CORE)] if len(busy) > 1 else busy[0],
        "load_core": busy[int(LOAD_CORE)] if len(busy) > 1 else busy[0],
    }


def measure_pair(
    app: Server,
    baseline: Server,
    endpoint: Endpoint,
    seconds: int,
    repetitions: int,
    size: Size,
    workdir: Path,
) -> dict[str, Any]:
    """Throughput of both, alternated run by run; medians of every figure."""
    for server in (app, baseline) if size.warm_up else ():  # caches, statements, the pool
        wrk(server.base_url, endpoint, 1, size.connections, workdir, pinned(LOAD_CORE, []))
    runs: dict[str, list[dict[str, float]]] = {"app": [], "baseline": []}
    for rep in range(repetitions):
        order = [("app", app), ("baseline", baseline)]
        for side, server in order if rep % 2 == 0 else order[::-1]:
            runs[side].append(run_once(server, endpoint, seconds, size, workdir))
    row: dict[str, Any] = {"endpoint": endpoint.name}
    for side, results in runs.items():
        row[side] = {key: statistics.median(r[key] for r in results) for key in results[0]}
        row[side]["runs"] = [round(r["rps"]) for r in results]
    row["ratio"] = row["app"]["rps"] / row["baseline"]["rps"]
    return row


def fixed_rate_latency(
    app: Server, baseline: Server, endpoint: Endpoint, rate: float, seconds: float, runs: int
) -> dict[str, Any]:
    """Both servers at the same fixed rate, alternated `runs` times: the median run's p50/p99.

    One run's p99 is set by its worst few requests, so a single stall of either server (or of
    the machine) would decide it; the median of several runs does not hang on one.
    """
    out: dict[str, Any] = {"rate": rate}
    measured: dict[str, list[dict[str, float]]] = {"app": [], "baseline": []}
    with on_load_core(), client.no_collector_pauses():
        for _ in range(runs):
            for side, server in (("app", app), ("baseline", baseline)):
                run = asyncio.run(client.fixed_rate(server.base_url, endpoint, rate, seconds))
                if run["errors"]:
                    raise SystemExit(
                        f"{endpoint.name} at {server.base_url}: errors at {rate} req/s"
                    )
                measured[side].append(run)
    for side, side_runs in measured.items():
        out[side] = {
            "requests": sum(r["requests"] for r in side_runs),
            "p50_ms": statistics.median(r["p50_ms"] for r in side_runs),
            "p99_ms": statistics.median(r["p99_ms"] for r in side_runs),
            "p99_runs_ms": [r["p99_ms"] for r in side_runs],
            "errors": 0,
        }
    out["p99_ratio"] = out["app"]["p99_ms"] / out["baseline"]["p99_ms"]
    return out


def api_throughput(
    app: Server, baseline: Server, seed: Seed, size: Size, workdir: Path
) -> list[dict[str, Any]]:
    rows = []
    for endpoint in endpoints(seed):
        row = measure_pair(app, baseline, endpoint, size.duration, size.repetitions, size, workdir)
        # Half of the slower server's capacity: both have room, so the latency is their own.
        rate = round(0.5 * min(row["app"]["rps"], row["baseline"]["rps"]))
        row["latency"] = fixed_rate_latency(
            app, baseline, endpoint, rate, size.latency_seconds, size.repetitions
        )
        row["p99_ratio"] = row["latency"]["p99_ratio"]
        rows.append(row)
        print(
            f"  {endpoint.name}: app {row['app']['rps']:.0f} req/s "
            f"({row['app']['cpu_us']:.0f} us CPU each), baseline {row['baseline']['rps']:.0f} "
            f"({row['baseline']['cpu_us']:.0f} us), ratio {row['ratio']:.2f}; "
            f"p99 at {rate} req/s {row['latency']['app']['p99_ms']:.1f} vs "
            f"{row['latency']['baseline']['p99_ms']:.1f} ms ({row['p99_ratio']:.2f}x)",
            flush=True,
        )
    return rows


# What logging and metrics cost, on the cheapest endpoint (where they weigh the most).
DEFAULT_OBSERVABILITY = "request log and metrics on (the default)"
OBSERVABILITY = [
    ("request log and metrics off", {"LOG_LEVEL": "WARNING", "METRICS": "false"}),
    ("request log on (JSON)", {"METRICS": "false"}),
    (DEFAULT_OBSERVABILITY, {}),
    # The collector's address is filled in when it runs.
    ("request log, metrics and traces (OTLP to a collector)", {"OTEL_EXPORTER_OTLP_ENDPOINT": ""}),
]


def observability_cost(
    baseline: Server, endpoint: Endpoint, env: dict[str, str], size: Size, workdir: Path
) -> list[dict[str, Any]]:
    """`endpoint`'s throughput with the request log, metrics and traces off and on, beside the
    baseline; the cost is against the all-off setup's ratio.

    A freshly started server's ratio moves by ±0.1 on its own (seen: the same setup 1.01x and
    1.24x), more than the effect measured. So every setup is served `size.repetitions` times,
    the setups taking turns, one run each; each row is the median server's.

    Traces go to a sink on the load core (`bench/collector.py`), standing in for a collector
    on another machine."""
    collector = start_server("bench.collector:app", env, "/", core=LOAD_CORE)
    # The tiny size (the test suite's) skips the log-only setup: the rest covers every path.
    setups = [s for s in OBSERVABILITY if size.name != "tiny" or s[0] != OBSERVABILITY[1][0]]
    samples: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in setups}
    for _ in range(size.repetitions):
        for label, overrides in setups:
            if "OTEL_EXPORTER_OTLP_ENDPOINT" in overrides:
                overrides = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.base_url}
            server = start_server("backend.main:app", env | overrides, "/readyz")
            try:
                samples[label].append(
                    measure_pair(server, baseline, endpoint, size.duration, 1, size, workdir)
                )
            finally:
                server.stop()
    collector.stop()
    rows: list[dict[str, Any]] = []
    for label, runs in samples.items():
        ratios = sorted(run["ratio"] for run in runs)
        row = next(run for run in runs if run["ratio"] == ratios[len(ratios) // 2])
        row["setup"] = label
        row["ratios"] = ratios
        row["cost"] = 1 - row["ratio"] / rows[0]["ratio"] if rows else 0.0
        rows.append(row)
        shown = ", ".join(f"{ratio:.2f}" for ratio in ratios)
        print(f"  {label}: ratios {shown}, cost {row['cost']:.1%}", flush=True)
    return rows
