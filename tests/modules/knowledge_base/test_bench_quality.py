"""The retrieval-quality benchmark: its metrics, and a run through the API on a labelled set in
BEIR's format (here the paraphrase set the default model is tested with)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from backend.core.config import PROJECT_ROOT
from bench.modules.knowledge_base.quality import (
    Dataset,
    bm25_yardstick,
    evaluate,
    load_beir,
    ndcg,
    recall,
    report,
)
from tests.modules.knowledge_base.test_knowledge_base import PARAPHRASES, QUESTIONS

pytestmark = pytest.mark.slow


def test_ndcg_and_recall_are_the_textbook_ones() -> None:
    judged = {"a": 2, "b": 1}
    assert ndcg(["a", "b", "x"], judged) == 1.0
    assert ndcg(["x", "y"], judged) == 0.0
    # b first, a second: (1/log2(2) + 2/log2(3)) / (2/log2(2) + 1/log2(3))
    expected = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert ndcg(["b", "a"], judged) == pytest.approx(expected)
    assert recall(["a", "x"], judged) == 0.5
    assert recall(["x"] * 10 + ["a"], judged) == 0.0  # past the 10th


def beir(folder: Path) -> Path:
    ids = {title: f"d{n}" for n, title in enumerate(PARAPHRASES)}
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        "".join(
            json.dumps({"_id": ids[t], "title": "", "text": text}) + "\n"
            for t, text in PARAPHRASES.items()
        )
        # An empty document, as real sets have: the API refuses it, the run goes on.
        + json.dumps({"_id": "empty", "title": "", "text": ""})
        + "\n"
    )
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{n}", "text": q}) + "\n" for n, q in enumerate(QUESTIONS))
    )
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n"
        + "".join(f"q{n}\t{ids[t]}\t1\n" for n, t in enumerate(QUESTIONS.values()))
    )
    return folder


async def test_the_benchmark_scores_each_embedder_and_mode(server: URL, tmp_path: Path) -> None:
    dataset = load_beir(beir(tmp_path / "paraphrases"))
    assert (len(dataset.corpus), len(dataset.queries)) == (9, 8)

    hashing = await evaluate(server, dataset, "hashing")
    default = await evaluate(server, dataset, "wordllama")

    # The questions share no word with their passages: the default model ranks each first,
    # hashed words and keywords do not.
    assert default["modes"]["vector"]["ndcg"] == 1.0
    assert default["refused"] == 1
    assert default["modes"]["vector"]["p50_ms"] > 0
    assert hashing["modes"]["vector"]["ndcg"] < 0.8
    assert default["modes"]["keyword"]["recall"] < 0.5
    table = report(dataset, [hashing, default])
    assert "| wordllama | vector | 1.000 | 1.000 |" in table


SCIFACT = PROJECT_ROOT.parent / "shared" / "datasets" / "scifact"


def scifact_slice(queries: int = 80, others: int = 800) -> Dataset:
    """SciFact's first `queries` test claims, their cited abstracts and `others` more."""
    full = load_beir(SCIFACT)
    asked = dict(sorted(full.queries.items())[:queries])
    judged = {q: full.qrels[q] for q in asked}
    cited = {doc for docs in judged.values() for doc in docs}
    kept = cited | set(sorted(set(full.corpus) - cited)[:others])
    corpus = {doc: text for doc, text in full.corpus.items() if doc in kept}
    return Dataset("scifact-slice", corpus, asked, judged)


@pytest.mark.skipif(not SCIFACT.is_dir(), reason=f"no SciFact at {SCIFACT}")
async def test_on_a_scifact_slice_keyword_matches_bm25_and_hybrid_beats_both_halves(
    server: URL,
) -> None:
    """The ordering the full SciFact run established (bench/results/quality.md), on a slice
    small enough for the suite: keyword search level with bm25s, hybrid above each half."""
    dataset = scifact_slice()
    yardstick = bm25_yardstick(dataset)["modes"]["keyword"]["ndcg"]

    modes = (await evaluate(server, dataset, "wordllama"))["modes"]

    vector, keyword, hybrid = (modes[m]["ndcg"] for m in ("vector", "keyword", "hybrid"))
    # On the whole set keyword is within 0.01 of bm25s; a slice's few queries move it more.
    assert keyword >= yardstick - 0.03, (keyword, yardstick)
    assert hybrid >= max(vector, keyword), modes
