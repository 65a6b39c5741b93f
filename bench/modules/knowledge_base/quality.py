"""Retrieval quality: nDCG@10 and recall@10 per search mode and embedder, through the API.

    python -m bench.modules.knowledge_base.quality DATASET [--embedders hashing,wordllama]
        [--queries N]

DATASET is a folder in BEIR's format (the format of SciFact, NFCorpus, FiQA, ...):
`corpus.jsonl` ({"_id", "title", "text"} a line), `queries.jsonl` ({"_id", "text"}) and
`qrels/test.tsv` (query-id, corpus-id, score, with a header line). For each embedder the
corpus goes into a knowledge base of its own, on a scratch database migrated by the real
`alembic upgrade head`, through `POST .../documents` and the app's own ingestion; each judged
query is asked in each mode through `POST .../search`. A document's rank is that of its best
chunk. An OpenAI-compatible server is measured with `--embedders openai` and the EMBEDDING_*
settings in the environment.

It prints a table and writes it to bench/results/quality.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import URL, make_url

from backend.core.config import PROJECT_ROOT
from backend.db.embedded import embedded_database_url
from backend.main import create_app
from backend.modules.knowledge_base.chunking import split_text
from backend.modules.knowledge_base.embeddings import create_embedder
from backend.modules.knowledge_base.settings import KnowledgeBaseSettings
from bench.db import alembic_upgrade, dsn, scratch_database
from tests.support.settings import (
    configured,  # the tests' helper (settings by name, whichever class declares them)
)

K = 10
MODES = ("vector", "keyword", "hybrid")
# Chunks asked for per query: enough to find 10 distinct documents when they have several.
TOP_CHUNKS = 30


@dataclass(frozen=True)
class Dataset:
    name: str
    corpus: dict[str, tuple[str, str]]  # id -> (title, text)
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]  # query id -> document id -> grade (> 0: relevant)


def load_beir(folder: Path, *, queries: int | None = None) -> Dataset:
    corpus = {}
    for line in (folder / "corpus.jsonl").read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            corpus[str(row["_id"])] = (str(row.get("title") or ""), str(row["text"]))
    qrels: dict[str, dict[str, int]] = {}
    for line in (folder / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        if line.strip():
            query, document, grade = line.split("\t")[:3]
            if int(grade) > 0 and document in corpus:
                qrels.setdefault(query, {})[document] = int(grade)
    asked = {}
    for line in (folder / "queries.jsonl").read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            if str(row["_id"]) in qrels:
                asked[str(row["_id"])] = str(row["text"])
    if queries is not None:
        asked = dict(sorted(asked.items())[:queries])
    return Dataset(folder.name, corpus, asked, {q: qrels[q] for q in asked})


def ndcg(ranked: list[str], judged: dict[str, int], k: int = K) -> float:
    """Normalised discounted cumulative gain at k, graded (BEIR's and trec_eval's form)."""
    gain = sum(judged.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sum(
        g / math.log2(i + 2) for i, g in enumerate(sorted(judged.values(), reverse=True)[:k])
    )
    return gain / ideal if ideal else 0.0


def recall(ranked: list[str], judged: dict[str, int], k: int = K) -> float:
    return len(set(ranked[:k]) & set(judged)) / len(judged) if judged else 0.0


async def embedder_cost(dataset: Dataset, embedder: str, chunks: int = 2000) -> dict[str, float]:
    """The embedder alone, on the corpus's first chunks as ingestion cuts them: chunks/s on one
    core (batches of EMBEDDING_BATCH_SIZE), and the memory its model and its work take (the
    peak of what Python allocated meanwhile, weights included)."""
    settings = KnowledgeBaseSettings(embedding_provider=embedder)
    texts: list[str] = []
    for title, text in dataset.corpus.values():
        body = f"{title}\n\n{text}".strip()
        texts += split_text(body, size=settings.chunk_size, overlap=settings.chunk_overlap)
        if len(texts) >= chunks:
            break
    model = create_embedder(settings)
    await model.embed(texts[: settings.embedding_batch_size])  # loaded, warm
    started = time.perf_counter()
    for at in range(0, len(texts), settings.embedding_batch_size):
        await model.embed(texts[at : at + settings.embedding_batch_size])
    seconds = time.perf_counter() - started
    await model.aclose()
    # Memory apart: tracing every allocation would slow what was just timed.
    tracemalloc.start()
    try:
        model = create_embedder(settings)
        for at in range(0, min(len(texts), 512), settings.embedding_batch_size):
            await model.embed(texts[at : at + settings.embedding_batch_size])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    await model.aclose()
    return {"chunks_per_s": len(texts) / seconds, "memory_mb": peak / 2**20}


async def evaluate(server: URL, dataset: Dataset, embedder: str) -> dict[str, Any]:
    """One embedder: load the corpus through the API, ask every query in every mode."""
    async with scratch_database(server, f"bench_quality_{embedder}") as url:
        alembic_upgrade(url)
        app = create_app(
            *configured(
                database_url=dsn(url),
                embedding_provider=embedder,
                # Ingestion as the dev server runs it: the app's own worker, default settings.
                background_in_process=True,
                # One user loads a whole corpus at once.
                max_queued_documents_per_user=10_000_000,
                max_documents_per_user=10_000_000,
                max_chunks_per_user=1_000_000_000,
            )
        )
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://q/api/v1", timeout=600) as api,
        ):
            headers = await _login(api)
            kb = (await api.post("/knowledge-bases", headers=headers, json={"name": "q"})).json()
            started = time.perf_counter()
            documents, refused = await _load(api, headers, kb["id"], dataset)
            await _until_ingested(url)
            ingest_seconds = time.perf_counter() - started
            scores: dict[str, dict[str, float]] = {}
            for mode in MODES:
                ndcgs, recalls, seconds = [], [], []
                for query_id, query in dataset.queries.items():
                    asked = time.perf_counter()
                    found = await api.post(
                        f"/knowledge-bases/{kb['id']}/search",
                        headers=headers,
                        json={"query": query, "top_k": TOP_CHUNKS, "mode": mode},
                    )
                    found.raise_for_status()
                    seconds.append(time.perf_counter() - asked)
                    ranked = list(
                        dict.fromkeys(documents[r["document_id"]] for r in found.json()["results"])
                    )
                    ndcgs.append(ndcg(ranked, dataset.qrels[query_id]))
                    recalls.append(recall(ranked, dataset.qrels[query_id]))
                scores[mode] = {
                    "ndcg": statistics.mean(ndcgs),
                    "recall": statistics.mean(recalls),
                    "p50_ms": statistics.median(seconds) * 1000,
                }
    return {
        "embedder": embedder,
        "ingest_s": ingest_seconds,
        "refused": refused,
        "modes": scores,
        "cost": await embedder_cost(dataset, embedder),
    }


# A request of POST .../document-batches: at most this many documents and bytes of text (the
# app takes 2 MB bodies by default).
BATCH_DOCUMENTS = 500
BATCH_BYTES = 1_500_000


async def _load(
    api: httpx.AsyncClient, headers: dict[str, str], kb: str, dataset: Dataset
) -> tuple[dict[str, str], int]:
    """The corpus queued through the batch endpoint: the API's document ids (-> the dataset's),
    and how many documents were not retrievable (an empty one, one the API refused)."""
    documents: dict[str, str] = {}
    refused = 0
    batch: list[tuple[str, dict[str, str]]] = []

    async def send() -> None:
        nonlocal refused
        answered = await api.post(
            f"/knowledge-bases/{kb}/document-batches",
            headers=headers,
            json={"documents": [body for _, body in batch]},
        )
        answered.raise_for_status()
        for (doc_id, _), item in zip(batch, answered.json()["documents"], strict=True):
            if item["status"] == "pending":
                documents[item["id"]] = doc_id
            else:
                refused += 1
        batch.clear()

    size = 0
    for doc_id, (title, text) in dataset.corpus.items():
        body = {"title": title or doc_id, "text": f"{title}\n\n{text}".strip()}
        if not body["text"]:  # the API's 422 for the whole batch; nothing to find anyway
            refused += 1
            continue
        if batch and (len(batch) == BATCH_DOCUMENTS or size + len(body["text"]) > BATCH_BYTES):
            await send()
            size = 0
        batch.append((doc_id, body))
        size += len(body["text"].encode())
    if batch:
        await send()
    return documents, refused


async def _until_ingested(url: URL, poll: float = 0.1) -> None:
    """Until the app's worker has processed every document (ready or failed)."""
    connection = await asyncpg.connect(dsn(url))
    try:
        left = "SELECT count(*) FROM documents WHERE status IN ('pending', 'processing')"
        while await connection.fetchval(left):  # noqa: ASYNC110 (the worker's state, in SQL)
            await asyncio.sleep(poll)
    finally:
        await connection.close()


def bm25_yardstick(dataset: Dataset) -> dict[str, Any]:
    """The baseline a search engineer starts from, on the same documents and queries: BM25
    (bm25s: English stop words, Snowball stemming, k1 1.5, b 0.75) over whole documents."""
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    ids = list(dataset.corpus)
    texts = [f"{title}\n\n{text}".strip() for title, text in dataset.corpus.values()]
    retriever = bm25s.BM25()
    started = time.perf_counter()
    retriever.index(
        bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False),
        show_progress=False,
    )
    index_seconds = time.perf_counter() - started
    query_ids = list(dataset.queries)
    asked = [dataset.queries[q] for q in query_ids]
    tokens = bm25s.tokenize(asked, stopwords="en", stemmer=stemmer, show_progress=False)
    found, _ = retriever.retrieve(tokens, k=min(K, len(ids)), show_progress=False)
    ndcgs, recalls = [], []
    for query_id, row in zip(query_ids, found, strict=True):
        ranked = [ids[int(n)] for n in row]
        ndcgs.append(ndcg(ranked, dataset.qrels[query_id]))
        recalls.append(recall(ranked, dataset.qrels[query_id]))
    keyword = {
        "ndcg": statistics.mean(ndcgs),
        "recall": statistics.mean(recalls),
        "p50_ms": float("nan"),  # in-process, no API: not comparable
    }
    return {
        "embedder": "bm25s (yardstick)",
        "ingest_s": index_seconds,
        "refused": 0,
        "modes": {"keyword": keyword},
    }


async def _login(api: httpx.AsyncClient) -> dict[str, str]:
    account = {"email": "q@example.com", "username": "quality", "password": "horse battery"}
    (await api.post("/auth/register", json=account)).raise_for_status()
    token = await api.post("/auth/token", data={"username": "quality", "password": "horse battery"})
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


def report(dataset: Dataset, results: list[dict[str, Any]]) -> str:
    lines = [
        f"# Retrieval quality: {dataset.name}",
        "",
        f"{len(dataset.corpus):,} documents, {len(dataset.queries):,} judged queries; nDCG@10 and "
        "recall@10 by document (a document ranks as its best chunk), through the API.",
        "",
        "| embedder | mode | nDCG@10 | recall@10 | search p50 ms | ingestion s | refused |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for mode, score in result["modes"].items():
            lines.append(
                f"| {result['embedder']} | {mode} | {score['ndcg']:.3f} | {score['recall']:.3f} "
                f"| {score['p50_ms']:.1f} | {result['ingest_s']:.1f} | {result['refused']} |"
            )
    costs = [r for r in results if "cost" in r]
    if costs:
        lines += [
            "",
            "Embedders (offline: the weights ship in the package), each alone on one core:",
            "",
            "| embedder | hybrid nDCG@10 | vector nDCG@10 | chunks/s | memory MB |",
            "|---|---|---|---|---|",
        ]
        for r in costs:
            lines.append(
                f"| {r['embedder']} | {r['modes']['hybrid']['ndcg']:.3f} "
                f"| {r['modes']['vector']['ndcg']:.3f} | {r['cost']['chunks_per_s']:,.0f} "
                f"| {r['cost']['memory_mb']:.0f} |"
            )
    return "\n".join(lines) + "\n"


async def run(server: URL, folder: Path, embedders: list[str], queries: int | None) -> str:
    dataset = load_beir(folder, queries=queries)
    results = [bm25_yardstick(dataset)]
    results += [await evaluate(server, dataset, embedder) for embedder in embedders]
    return report(dataset, results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.modules.knowledge_base.quality")
    parser.add_argument("dataset", type=Path, help="a folder in BEIR's format")
    parser.add_argument("--embedders", default="hashing,wordllama")
    parser.add_argument("--queries", type=int, default=None, help="at most this many queries")
    args = parser.parse_args(argv)
    if not (args.dataset / "corpus.jsonl").is_file():
        parser.error(f"{args.dataset} has no corpus.jsonl: not a BEIR-format folder")
    server = make_url(embedded_database_url(PROJECT_ROOT / ".data" / "postgres-bench"))
    table = asyncio.run(run(server, args.dataset, args.embedders.split(","), args.queries))
    print(table)
    out = PROJECT_ROOT / "bench" / "results" / "quality.md"
    out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
