"""The data every API measurement runs against, made through the API itself."""

from __future__ import annotations

from dataclasses import dataclass

import httpx


@dataclass
class Seed:
    token: str
    kb_id: str


def seed(client: httpx.Client) -> Seed:
    account = {"email": "bench@example.com", "username": "bench", "password": "bench-password"}
    client.post("/api/v1/auth/register", json=account).raise_for_status()
    login = client.post(
        "/api/v1/auth/token", data={"username": account["email"], "password": account["password"]}
    )
    login.raise_for_status()
    token = login.json()["access_token"]
    client.headers["Authorization"] = f"Bearer {token}"
    for n in range(25):  # more than a page of 20
        client.post(
            "/api/v1/files", files={"file": (f"note-{n}.txt", f"note {n}\n".encode() * 50)}
        ).raise_for_status()
    kb = client.post("/api/v1/knowledge-bases", json={"name": "handbook"})
    kb.raise_for_status()
    client.post(
        f"/api/v1/knowledge-bases/{kb.json()['id']}/documents",
        json={"title": "handbook", "text": markdown(30_000)},
    ).raise_for_status()
    return Seed(token, kb.json()["id"])


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


def markdown(chars: int) -> str:
    """A long markdown document: headings and paragraphs of varied words."""
    out: list[str] = []
    size = n = 0
    while size < chars:
        if n % 8 == 0:
            out.append(f"\n## Section {n // 8}\n")
        words = [WORDS[(n * 7 + i * 3) % len(WORDS)] for i in range(60)]
        paragraph = " ".join(words).capitalize() + f" (paragraph {n}).\n"
        out.append(paragraph)
        size += len(paragraph) + 14
        n += 1
    return "".join(out)[:chars]
