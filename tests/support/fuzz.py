"""Schema-driven fuzzing: schemathesis with every check, against a real server, authenticated.

    python3 dev.py fuzz [--examples N] [--seed S]     (the test suite runs a short one)

Every operation, the coverage, fuzzing and stateful phases (links inferred from responses and
`Location` headers), checks for 5xx, undocumented statuses, schema conformance and rejected
valid data. Exceptions are in schemathesis.toml, each with its reason.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from backend.core.config import PROJECT_ROOT
from tests.support import db
from tests.support.server import uvicorn_server

ACCOUNT = {"email": "fuzzer@example.com", "username": "fuzzer", "password": "fuzz the api please"}
# Deleting the account the fuzzer authenticates with would turn the rest of the run into 401s.
SPARED = "delete_me_api_v1_users_me_delete"


async def fuzz(*, examples: int, seed: int) -> subprocess.CompletedProcess[str]:
    server = db.server_url()
    url = await db.create_database(server)
    try:
        await db.upgrade(url)
        with tempfile.TemporaryDirectory() as tmp:
            # Out of the way: the fuzzer logs in and uploads far more than a person would.
            limits = {"LOGIN_MAX_FAILURES": "1000000", "STORAGE_QUOTA_BYTES": "0"}
            async with uvicorn_server(url, Path(tmp) / "files", **limits) as base:
                async with httpx.AsyncClient(base_url=f"{base}/api/v1") as client:
                    await client.post("/auth/register", json=ACCOUNT)
                    login = {"username": ACCOUNT["username"], "password": ACCOUNT["password"]}
                    token = (await client.post("/auth/token", data=login)).json()["access_token"]
                command = [
                    str(Path(sys.executable).with_name("schemathesis")),
                    "run",
                    f"{base}/openapi.json",
                    "--header",
                    f"Authorization: Bearer {token}",
                    "--checks",
                    "all",
                    "--max-examples",
                    str(examples),
                    "--seed",
                    str(seed),
                    "--exclude-operation-id",
                    SPARED,
                    "--no-color",
                ]
                return await asyncio.to_thread(
                    subprocess.run,
                    command,
                    cwd=PROJECT_ROOT,  # schemathesis.toml
                    capture_output=True,
                    text=True,
                    check=False,
                )
    finally:
        await db.drop_database(server, str(url.database))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    result = asyncio.run(fuzz(examples=args.examples, seed=args.seed))
    print(result.stdout, result.stderr, sep="\n")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
