"""bench/results/latest.md (tables, targets) and latest.png (the chart)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.api import DEFAULT_OBSERVABILITY


def as_in_production(m: dict[str, Any], defaults: dict[str, Any]) -> bool:
    """The measurement taken with the app's default search settings (`defaults`, as the vector
    benchmark recorded them)."""
    return bool(
        m["path"] == "exact"
        or (
            m["ef_search"] == defaults["ef_search"]
            and m["iterative_scan"] == defaults["iterative_scan"]
        )
    )


@dataclass(frozen=True)
class Target:
    """One row of the targets table: `measured(item)` compared with `limit`, for each item."""

    label: str  # formatted with the item's fields
    items: Callable[[dict[str, Any]], Iterable[dict[str, Any]]]
    measured: Callable[[dict[str, Any]], float]
    limit: float
    at_least: bool  # True: measured >= limit; False: measured <= limit
    unit: str  # format of a value, e.g. "{:.2f}x"

    def rows(self, results: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
        sign = ">=" if self.at_least else "<="
        for item in self.items(results):
            value = self.measured(item)
            ok = value >= self.limit if self.at_least else value <= self.limit
            yield (
                f"{self.label.format(**item)} {sign} {self.unit.format(self.limit)}",
                self.unit.format(value),
                "met" if ok else "**missed**",
            )


def _api(*prefixes: str) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
    """The API rows whose endpoint starts with one of `prefixes` (all but /healthz if none)."""

    def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            row
            for row in results["api"]
            if row["endpoint"] != "GET /healthz"
            and (not prefixes or row["endpoint"].startswith(prefixes))
        ]

    return rows


def _search(data_set: str) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
    def measurements(results: dict[str, Any]) -> list[dict[str, Any]]:
        if "vectors" not in results:
            return []
        found = results["vectors"]["sets"][data_set]["measurements"]
        return [m for m in found if as_in_production(m, results["vectors"]["defaults"])]

    return measurements


def _section(name: str) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
    return lambda results: [results[name]] if name in results else []


# The benchmark's targets; the report's table is these rows, measured.
TARGETS = [
    Target(
        "`{endpoint}` req/s vs baseline",
        _api("GET /api/v1/users/me"),
        lambda r: r["ratio"],
        0.5,
        True,
        "{:.2f}x",
    ),
    Target(
        "`{endpoint}` req/s vs baseline",
        _api("GET /api/v1/files", "POST"),
        lambda r: r["ratio"],
        0.4,
        True,
        "{:.2f}x",
    ),
    Target(
        "`{endpoint}` p99 vs baseline, same fixed rate",
        _api(),
        lambda r: r["p99_ratio"],
        3,
        False,
        "{:.2f}x",
    ),
    Target(
        "search p50, {kb_chunks:,} chunks in one KB",
        _search("single"),
        lambda m: m["p50_ms"],
        5,
        False,
        "{:.2f} ms",
    ),
    Target(
        "search recall@10, {kb_chunks:,} chunks in one KB",
        _search("single"),
        lambda m: m["recall"],
        0.95,
        True,
        "{:.3f}",
    ),
    Target(
        "per-KB search recall@10, KB of {kb_chunks:,} ({path})",
        _search("multi"),
        lambda m: m["recall"],
        0.99,
        True,
        "{:.3f}",
    ),
    Target(
        "upload {size_mb} MB",
        _section("transfers"),
        lambda t: t["upload_mb_s"],
        100,
        True,
        "{:.0f} MB/s",
    ),
    Target(
        "download {size_mb} MB",
        _section("transfers"),
        lambda t: t["download_mb_s"],
        100,
        True,
        "{:.0f} MB/s",
    ),
    Target(
        "upload peak memory growth",
        _section("transfers"),
        lambda t: t["upload_peak_growth_mb"],
        32,
        False,
        "{:.1f} MB",
    ),
    Target(
        "download peak memory growth",
        _section("transfers"),
        lambda t: t["download_peak_growth_mb"],
        32,
        False,
        "{:.1f} MB",
    ),
    Target(
        "S3 upload {size_mb} MB",
        _section("transfers_s3"),
        lambda t: t["upload_mb_s"],
        100,
        True,
        "{:.0f} MB/s",
    ),
    Target(
        "S3 download {size_mb} MB",
        _section("transfers_s3"),
        lambda t: t["download_mb_s"],
        100,
        True,
        "{:.0f} MB/s",
    ),
    Target(
        "S3 upload peak memory growth",
        _section("transfers_s3"),
        lambda t: t["upload_peak_growth_mb"],
        32,
        False,
        "{:.1f} MB",
    ),
    Target(
        "S3 download peak memory growth",
        _section("transfers_s3"),
        lambda t: t["download_peak_growth_mb"],
        32,
        False,
        "{:.1f} MB",
    ),
    Target(
        "ingestion",
        _section("ingestion"),
        lambda i: i["chunks_per_s"],
        2000,
        True,
        "{:,.0f} chunks/s",
    ),
    Target(
        "errors under the mixed load, {workers} worker(s)",
        lambda results: results.get("mixed", []),
        lambda r: r["errors"],
        0,
        False,
        "{:,}",
    ),
    Target(
        "throughput cost of the default request log and metrics, `{endpoint}`",
        lambda results: [
            row for row in results.get("observability", []) if row["setup"] == DEFAULT_OBSERVABILITY
        ],
        lambda r: r["cost"],
        0.10,
        False,
        "{:.1%}",
    ),
    Target(
        "no-op `alembic upgrade head`",
        _section("migrations"),
        lambda m: m["noop_at_head_s"],
        1.5,
        False,
        "{:.2f} s",
    ),
    Target(
        "process start to /readyz 200",
        _section("startup"),
        lambda s: s["to_ready_s"],
        3,
        False,
        "{:.2f} s",
    ),
]


def targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(target, measured, status) for every target."""
    return [row for target in TARGETS for row in target.rows(results)]


def markdown(results: dict[str, Any]) -> str:
    s = results["setup"]
    rows = targets(results)
    missed = any(status != "met" for *_, status in rows)
    out = [
        "# Benchmark results",
        "",
        f"Size `{s['size']}`; {s['cores']} cores; Python {s['python']}. Server under test: one "
        f"uvicorn worker{' pinned to core 0' if s['pinned'] else ''}, production settings (a "
        "JSON request line to a file, request metrics). wrk "
        f"(1 thread, {s['connections']} connections, {s['duration_s']} s per run)"
        f"{' and PostgreSQL pinned to core 1' if s['postgres_pinned'] else ''}"
        f"{'' if s['postgres_pinned'] else '; PostgreSQL not pinned'}. "
        f"Loopback only. App and baseline runs alternate; medians of {s['repetitions']} "
        "runs. Regenerate with `python3 dev.py bench`.",
        "",
        "## Targets",
        "",
        "| target | measured | status |",
        "| --- | --- | --- |",
        *(f"| {t} | {m} | {st} |" for t, m, st in rows),
        "",
        *(["Why a target is missed: the README's Benchmarks section.", ""] if missed else []),
        "## API against the raw baseline",
        "",
        "Baseline: `bench/baseline.py`, a bare Starlette app on an asyncpg pool of the same size "
        "doing the same token check and the same SQL, orjson responses. Throughput: wrk at "
        f"{s['connections']} connections. CPU: the server process's user + system time per "
        "request. Load core: how busy core 1 (wrk and PostgreSQL) was during the app's runs; "
        "near 100% it would cap the ratio. Latency: both servers at the same fixed rate "
        "(half the slower one's capacity, open loop, timed from when each request was due).",
        "",
        "| endpoint | app req/s | baseline req/s | ratio | CPU us/req app / baseline | "
        "load core busy | fixed rate | p50 ms app / baseline | p99 ms app / baseline | p99 ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results["api"]:
        a, b, lat = r["app"], r["baseline"], r["latency"]
        la, lb = lat["app"], lat["baseline"]
        out.append(
            f"| `{r['endpoint']}` | {a['rps']:,.0f} | {b['rps']:,.0f} | {r['ratio']:.2f} | "
            f"{a['cpu_us']:.0f} / {b['cpu_us']:.0f} | {a['load_core']:.0%} | "
            f"{lat['rate']:,} req/s | {la['p50_ms']:.2f} / {lb['p50_ms']:.2f} | "
            f"{la['p99_ms']:.2f} / {lb['p99_ms']:.2f} | {r['p99_ratio']:.2f} |"
        )
    out += layers_section(results) + observability_section(results)
    out += mixed_section(results)
    out += vectors_section(results) + transfers_section(results) + ingestion_section(results)
    mig, start = results["migrations"], results["startup"]
    out += [
        "",
        "## Migrations and start-up",
        "",
        "| | seconds (median) |",
        "| --- | ---: |",
        f"| `alembic upgrade head`, empty database | {mig['empty_to_head_s']:.2f} |",
        f"| `alembic upgrade head` at head (no-op; every init container, every rollout) | "
        f"{mig['noop_at_head_s']:.2f} |",
        f"| process start to `/readyz` 200 | {start['to_ready_s']:.2f} |",
        "",
        "Chart: `latest.png`. Raw figures: `latest.json`.",
        "",
    ]
    return "\n".join(out)


def vectors_section(results: dict[str, Any]) -> list[str]:
    if "vectors" not in results:
        return []
    out: list[str] = []
    v = results["vectors"]
    out += [
        "",
        "## Vector search",
        "",
        f"{v['dimension']} dimensions, clustered synthetic unit vectors, cosine, k=10, "
        f"{v['size']['queries']} queries per setting, one session per query (as a request has). "
        "The query is the app's own (`knowledge_base.search.nearest_chunks`); knowledge bases up "
        f"to {v['size']['exact_max_chunks']:,} chunks are scanned exactly, larger ones use "
        "the HNSW index (m=16, ef_construction=200). Recall@10 is against exact neighbours. "
        "In the multi set every knowledge base draws from the same topics: *outside* is the "
        "share of each query's 10 nearest chunks in the whole table that belong to other "
        "knowledge bases, which the filter must skip.",
        "",
        "| data set | rows | HNSW build s | index MB |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, data in v["sets"].items():
        out.append(
            f"| {name} | {data['rows']:,} | {data['build_s']:.1f} | {data['index_mb']:.0f} |"
        )
    out += [
        "",
        "| data set | KB chunks | outside | path | ef_search | iterative scan | p50 ms | p99 ms "
        "| recall@10 |",
        "| --- | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for name, data in v["sets"].items():
        for m in data["measurements"]:
            exact = m["path"] == "exact"
            out.append(
                f"| {name} | {m['kb_chunks']:,} | {m['neighbours_outside_kb']:.0%} | {m['path']} | "
                f"{'-' if exact else m['ef_search']} | {'-' if exact else m['iterative_scan']} | "
                f"{m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {m['recall']:.3f} |"
            )
    return out


def transfers_section(results: dict[str, Any]) -> list[str]:
    if "transfers" not in results:
        return []
    out: list[str] = []
    t = results["transfers"]
    out += [
        "",
        "## Uploads and downloads",
        "",
        f"One {t['size_mb']} MB file through `POST /api/v1/files` (multipart, streamed) and "
        "`GET /api/v1/files/{id}/content`; memory is the server's resident set, sampled "
        "every 5 ms. `s3` is `STORAGE_BACKEND=s3` against `rclone serve s3` on loopback (a real "
        "S3 server sharing these two cores, so its CPU is in the figures too).",
        "",
        "| storage | transfer | MB/s | peak memory growth MB |",
        "| --- | --- | ---: | ---: |",
    ]
    for backend, figures in (("local", t), ("s3", results.get("transfers_s3"))):
        if figures is None:
            continue
        for way in ("upload", "download"):
            out.append(
                f"| {backend} | {way} | {figures[f'{way}_mb_s']:.0f} | "
                f"{figures[f'{way}_peak_growth_mb']:.1f} |"
            )
    return out


def ingestion_section(results: dict[str, Any]) -> list[str]:
    if "ingestion" not in results:
        return []
    i = results["ingestion"]
    out: list[str] = []
    out += [
        "",
        "## Ingestion",
        "",
        f"A {i['document_mb']:.1f} MB markdown file added to a knowledge base with the default "
        f"embedder (WordLlama): {i['chunks']:,} chunks in {i['seconds']:.2f} s, "
        f"**{i['chunks_per_s']:,.0f} chunks/s** (queued through the API, then parsed, chunked, "
        "embedded and stored by the worker in the API process).",
        "",
        f"Where the time goes: embedding the same number of chunks alone takes "
        f"{i.get('embedding_s', float('nan')):.2f} s (the bench process, one core); writing them "
        f"by COPY (no app, no embedding) takes {i['with_index_s']:.2f} s into the table with "
        "its HNSW index and "
        f"{i['without_index_s']:.2f} s without it: the difference is inserting each chunk "
        "into the HNSW graph (m=16, ef_construction=200), paid whatever the app does. The "
        "worker writes by the same COPY, embedding ahead of it "
        "(`backend/modules/knowledge_base/chunk_copy.py`), so that write is its floor; the rest "
        "is parsing, the first batch's embedding and the queue's poll.",
        "",
    ]
    if workers := i.get("workers"):
        out += [
            f"Worker processes (`python -m backend.worker`, one document at a time each) on "
            f"{workers[0]['documents']} such documents queued at once; PostgreSQL runs on one "
            "core here (the bench pins it), and each worker's COPY is one PostgreSQL backend "
            "inserting into the HNSW graph, so the figure stops growing where that core is "
            "full. On a PostgreSQL with more cores, add workers (or `INGESTION_CONCURRENCY`) "
            "up to about one per core it can spare.",
            "",
            "| workers | chunks | seconds | chunks/s |",
            "|---|---|---|---|",
            *(
                f"| {row['workers']} | {row['chunks']:,} | {row['seconds']:.2f} | "
                f"{row['chunks_per_s']:,.0f} |"
                for row in workers
            ),
            "",
        ]
    return out


def layers_section(results: dict[str, Any]) -> list[str]:
    rows = results.get("layers")
    if not rows:
        return []
    layers = sorted({layer for row in rows for layer in row["layers"]})
    out = [
        "",
        "## CPU per request, by layer",
        "",
        "py-spy samples of the app under wrk, each charged to the innermost frame of a known "
        "layer, applied to the CPU time per request measured without the profiler (us).",
        "",
        "| layer | " + " | ".join(f"`{r['endpoint']}`" for r in rows) + " |",
        "| --- |" + " ---: |" * len(rows),
    ]
    for layer in layers:
        out.append(
            f"| {layer} | " + " | ".join(f"{r['layers'].get(layer, 0):.0f}" for r in rows) + " |"
        )
    out.append("| **total** | " + " | ".join(f"**{r['cpu_us']:.0f}**" for r in rows) + " |")
    return out


def observability_section(results: dict[str, Any]) -> list[str]:
    rows = results.get("observability")
    if not rows:
        return []
    out = [
        "",
        "## What the request log, metrics and traces cost",
        "",
        f"`{rows[0]['endpoint']}` beside the baseline, each setup served several times by turns "
        "(a fresh server's ratio moves by ±0.1; each row is the median server's): logging a JSON "
        "line per request (to a file, as a container's log is), counting it for `/metrics`, "
        "and tracing it (spans batched over OTLP/HTTP to a sink on the load core), off and on. "
        "The cost is the loss of throughput ratio against the all-off row. Tracing is off "
        "unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set.",
        "",
        "| setup | app req/s | ratio (each server's) | cost |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row in rows:
        each = ", ".join(f"{ratio:.2f}" for ratio in row.get("ratios", []))
        out.append(
            f"| {row['setup']} | {row['app']['rps']:,.0f} | {row['ratio']:.2f}x"
            f"{f' ({each})' if each else ''} | {row['cost']:.1%} |"
        )
    middleware = results.get("middleware_us")
    if middleware:
        api_cpu = {row["endpoint"]: row["app"]["cpu_us"] for row in results.get("api", [])}
        me = api_cpu.get(rows[0]["endpoint"])
        out += [
            "",
            "The same, in-process and steadier (`bench/middleware.py`): each middleware chain "
            "driven directly, CPU per request"
            + (f", and as a share of `{rows[0]['endpoint']}`'s {me:.0f} us:" if me else ":"),
            "",
            "| middleware | CPU us per request | share |",
            "| --- | ---: | ---: |",
        ]
        for name, us in middleware.items():
            share = f"{us / me:.1%}" if me else "-"
            out.append(f"| {name} | {us:.1f} | {share} |")
    return out


def mixed_section(results: dict[str, Any]) -> list[str]:
    rows = results.get("mixed")
    if not rows:
        return []
    out = [
        "",
        "## Mixed load, and uvicorn workers",
        "",
        f"64 connections for {rows[0]['seconds']:.0f} s, each sending the next request as soon "
        "as the last answered: 20% `GET /users/me`, 20% `GET /files`, 10% `GET /files/{id}`, 25% "
        "search (exact), 10% search (HNSW), 8% 16 kB uploads, 5% new 4 kB documents (queued, "
        "and ingested by the in-process worker meanwhile), 2% `/healthz`. Several workers "
        "share the machine's "
        f"{results['setup']['cores']} cores with the load generator and PostgreSQL (unpinned).",
        "",
        "| workers | req/s | errors | memory MB, first third -> last third of the run |",
        "| ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        out.append(
            f"| {row['workers']} | {row['rps']:,.0f} | {row['errors']} | "
            f"{row['memory_first_third_mb']:.0f} -> {row['memory_last_third_mb']:.0f} |"
        )
    names = list(rows[0]["endpoints"])
    out += [
        "",
        "| endpoint | " + " | ".join(f"{r['workers']} worker(s) p50 / p99 ms" for r in rows) + " |",
        "| --- |" + " ---: |" * len(rows),
    ]
    for name in names:
        cells = [
            f"{r['endpoints'][name]['p50_ms']:.1f} / {r['endpoints'][name]['p99_ms']:.1f}"
            for r in rows
        ]
        out.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return out


def chart(results: dict[str, Any], path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.5))
    names = [
        r["endpoint"].replace("/api/v1", "").replace("POST ", "POST\n") for r in results["api"]
    ]
    x = range(len(names))
    width = 0.38
    ax = axes[0]
    ax.bar(
        [i - width / 2 for i in x], [r["app"]["rps"] for r in results["api"]], width, label="app"
    )
    ax.bar(
        [i + width / 2 for i in x],
        [r["baseline"]["rps"] for r in results["api"]],
        width,
        label="raw baseline",
    )
    ax.set_xticks(list(x), names, fontsize=8)
    ax.set_ylabel("requests/s (median)")
    ax.set_title("Throughput per endpoint")
    ax.legend()

    ax = axes[1]
    for offset, side, colour in ((-width / 2, "app", "C0"), (width / 2, "baseline", "C1")):
        ax.bar(
            [i + offset for i in x],
            [r["latency"][side]["p99_ms"] for r in results["api"]],
            width,
            color=colour,
            alpha=0.35,
            label=f"{side} p99",
        )
        ax.bar(
            [i + offset for i in x],
            [r["latency"][side]["p50_ms"] for r in results["api"]],
            width,
            color=colour,
            label=f"{side} p50",
        )
    ax.set_xticks(list(x), names, fontsize=8)
    ax.set_ylabel("latency ms")
    ax.set_title("Latency at a fixed rate (half the slower server's capacity)")
    ax.legend(fontsize=8)

    ax = axes[2]
    for name, data in results.get("vectors", {"sets": {}})["sets"].items():
        for m in data["measurements"]:
            label = (
                f"{name} {m['kb_chunks']:,}: exact"
                if m["path"] == "exact"
                else f"{name} {m['kb_chunks']:,}: ef={m['ef_search']} {m['iterative_scan']}"
            )
            ax.scatter(m["p50_ms"], m["recall"], label=label, s=30)
    ax.set_xlabel("p50 latency ms (k=10)")
    ax.set_ylabel("recall@10")
    ax.set_title("Vector search: recall against latency per setting")
    ax.legend(fontsize=6, loc="lower right")
    fig.suptitle(
        f"bench ({results['setup']['size']}): one uvicorn worker on core 0, wrk and PostgreSQL "
        "on core 1, loopback"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(results: dict[str, Any], out: Path) -> None:
    (out / "latest.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "latest.md").write_text(markdown(results))
    chart(results, out / "latest.png")
