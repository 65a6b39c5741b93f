"""The data every API measurement runs against, made through the API itself."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx


@dataclass
class Seed:
    token: str
    kb_id: str  # a small knowledge base (searched exactly)
    kb_chunks: int
    large_kb_id: str  # one above SEARCH_EXACT_MAX_CHUNKS (searched through the HNSW index)
    large_kb_chunks: int
    file_id: str


# The app and the baseline run with this, so the large knowledge base takes the index path.
EXACT_MAX_CHUNKS = 1000
LARGE_KB_DOCUMENTS = 4  # of 800 kB each: about 3,700 chunks


def seed(client: httpx.Client, large_documents: int = LARGE_KB_DOCUMENTS) -> Seed:
    account = {"email": "bench@example.com", "username": "bench", "password": "bench-password"}
    client.post("/api/v1/auth/register", json=account).raise_for_status()
    login = client.post(
        "/api/v1/auth/token", data={"username": account["email"], "password": account["password"]}
    )
    login.raise_for_status()
    token = login.json()["access_token"]
    client.headers["Authorization"] = f"Bearer {token}"
    for n in range(25):  # more than a page of 20
        uploaded = client.post(
            "/api/v1/files", files={"file": (f"note-{n}.txt", f"note {n}\n".encode() * 50)}
        )
        uploaded.raise_for_status()
    kb, kb_chunks = knowledge_base(client, "handbook", [markdown(30_000)])
    large, large_chunks = knowledge_base(
        client, "archive", [markdown(800_000, seed=n) for n in range(large_documents)]
    )
    return Seed(token, kb, kb_chunks, large, large_chunks, uploaded.json()["id"])


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
