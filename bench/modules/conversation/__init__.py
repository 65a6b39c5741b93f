"""The conversation module's part of the bench: streaming is its own command,
`python -m bench.modules.conversation.streaming` (streaming.py: what the service adds to a
model's first token, and how many open streams one worker holds). It adds nothing to the API
benchmark: a turn's cost is the model's, measured there against the model alone."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import httpx
from starlette.routing import Route

from bench.load import Endpoint
from bench.modules import Context, Weighted
from bench.seed import Seed
from bench.sizes import Size

SECTIONS: tuple[str, ...] = ()


def app_env(size: Size, workdir: Path) -> dict[str, str]:
    return {}


def seed(client: httpx.Client, size: Size) -> dict[str, Any]:
    return {}


def endpoints(seed: Seed) -> list[Endpoint]:
    return []


def baseline_routes() -> list[Route]:
    return []


def mix(seed: Seed) -> list[Weighted]:
    return []


def measure(context: Context, sections: Collection[str]) -> dict[str, Any]:
    return {}
