"""Knowledge bases for the bench, made through the API: documents of generated markdown."""

from __future__ import annotations

import time

import httpx

WORDS = [
    "migration",
    "replica",
    "database",
    "schema",
    "index",
    "vector",
    "search",
    "upgrade",
    "rollback",
    "deploy",
]


def markdown(chars: int, seed: int = 0) -> str:
    """A long markdown document: headings and paragraphs of varied words."""
    out: list[str] = []
    size = n = 0
    while size < chars:
        if n % 8 == 0:
            out.append(f"\n## Section {n // 8}\n")
        words = [WORDS[(n * 7 + i * (3 + seed) + seed) % len(WORDS)] for i in range(60)]
        paragraph = " ".join(words).capitalize() + f" (paragraph {n}).\n"
        out.append(paragraph)
        size += len(paragraph) + 14
        n += 1
    return "".join(out)[:chars]


def knowledge_base(client: httpx.Client, name: str, documents: list[str]) -> tuple[str, int]:
    """A knowledge base holding `documents`: its id and how many chunks it has."""
    kb = client.post("/api/v1/knowledge-bases", json={"name": name})
    kb.raise_for_status()
    path = f"/api/v1/knowledge-bases/{kb.json()['id']}"
    queued = []
    for n, text in enumerate(documents):
        added = client.post(f"{path}/documents", json={"title": f"{name} {n}", "text": text})
        added.raise_for_status()
        queued.append(added.headers["location"])
    for location in queued:
        wait_until_ingested(client, location)
    return str(kb.json()["id"]), int(client.get(path).json()["chunk_count"])


def wait_until_ingested(client: httpx.Client, location: str, poll: float = 0.02) -> None:
    """Until the document at `location` is `ready`; an error if it `failed`."""
    while (document := client.get(location).json())["status"] in ("pending", "processing"):
        time.sleep(poll)
    if document["status"] != "ready":
        raise RuntimeError(f"ingestion failed: {document['error']}")
