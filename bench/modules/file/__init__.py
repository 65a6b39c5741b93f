"""The file module's part of the bench: file listings against the baseline, uploads in the mixed
load, and uploads and downloads measured on the local disk and on S3."""

from __future__ import annotations

import itertools
from collections.abc import Collection
from pathlib import Path
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.load import Endpoint
from bench.modules import Context, Weighted
from bench.modules.file.transfers import transfers, transfers_s3
from bench.raw import UNAUTHORISED, Pool, json, user_for
from bench.seed import Seed
from bench.sizes import Size

SECTIONS = ("transfers",)

FILES = (
    "SELECT * FROM files WHERE owner_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
)
FILE_FIELDS = ("id", "filename", "content_type", "size", "sha256", "created_at")
BOUNDARY = "benchboundary7MA4YWxkTrZu0gW"


def app_env(size: Size, workdir: Path) -> dict[str, str]:
    return {
        "FILE_STORAGE_DIR": str(workdir / "files"),
        "MAX_UPLOAD_BYTES": str((size.upload_mb + 16) * 1024 * 1024),
        "STORAGE_QUOTA_BYTES": str(64 * 1024**3),  # the mixed load uploads thousands of files
    }


def seed(client: httpx.Client, size: Size) -> dict[str, Any]:
    for n in range(25):  # more than a page of 20
        uploaded = client.post(
            "/api/v1/files", files={"file": (f"note-{n}.txt", f"note {n}\n".encode() * 50)}
        )
        uploaded.raise_for_status()
    return {"file_id": uploaded.json()["id"]}


def endpoints(seed: Seed) -> list[Endpoint]:
    return [Endpoint("GET /api/v1/files", "GET", "/api/v1/files", seed.auth)]


async def files(request: Request) -> Response:
    limit, offset = 20, 0
    async with Pool.pool.acquire() as connection:
        user = await user_for(request, connection)
        if user is None:
            return UNAUTHORISED
        rows = await connection.fetch(FILES, user["id"], limit + 1, offset)
    items = [{k: row[k] for k in FILE_FIELDS} for row in rows[:limit]]
    return json({"items": items, "limit": limit, "offset": offset, "has_more": len(rows) > limit})


def baseline_routes() -> list[Route]:
    return [Route("/api/v1/files", files)]


def mix(seed: Seed) -> list[Weighted]:
    counter = itertools.count()
    file_id = seed.data["file"]["file_id"]

    def upload() -> Endpoint:
        n = next(counter)
        content = f"mixed load file {n}\n" * 800  # ~16 kB
        body = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="mixed-{n}.txt"\r\nContent-Type: text/plain\r\n\r\n'
            f"{content}\r\n--{BOUNDARY}--\r\n"
        )
        headers = {**seed.auth, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
        return Endpoint("POST /api/v1/files", "POST", "/api/v1/files", headers, body)

    return [
        (20, Endpoint("GET /api/v1/files", "GET", "/api/v1/files", seed.auth)),
        (10, Endpoint("GET /api/v1/files/{id}", "GET", f"/api/v1/files/{file_id}", seed.auth)),
        (8, upload),
    ]


def measure(context: Context, sections: Collection[str]) -> dict[str, Any]:
    if "transfers" not in sections:
        return {}
    c = context
    print("uploads", flush=True)
    local = transfers(c.app, c.seed, c.size, c.workdir)
    print("uploads (S3)", flush=True)
    return {"transfers": local, "transfers_s3": transfers_s3(c.env, c.seed, c.size, c.workdir)}
