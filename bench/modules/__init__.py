"""Each module's part of the performance lab, in `bench/modules/<name>/`: it goes with the module
(`python3 dev.py module remove`), and the harness finds those of the modules main.py mounts.

A module's package defines what it adds (`ModuleBench`): data to seed through its API, its
endpoints measured against the raw baseline (and the baseline's version of them), its share of
the mixed load, and sections measured after the API benchmark (`measure`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import httpx
from sqlalchemy.engine import URL
from starlette.routing import Route

from backend.main import MODULES
from bench.load import Endpoint
from bench.processes import Server
from bench.seed import Seed
from bench.sizes import Size

# (weight, a request or a function making a fresh one): a kind of request in the mixed load.
Weighted = tuple[float, Endpoint | Callable[[], Endpoint]]


@dataclass(frozen=True)
class Context:
    """What a module's own measurements run with."""

    server: URL  # the PostgreSQL server (scratch databases go there)
    database: URL  # the API's database
    app: Server  # the app, serving `database`
    env: dict[str, str]  # the app's environment (to start another one)
    seed: Seed
    size: Size
    workdir: Path


class ModuleBench(Protocol):
    # The results' keys `measure` writes (and the names `--only` takes).
    SECTIONS: tuple[str, ...]

    def app_env(self, size: Size, workdir: Path) -> dict[str, str]:
        """Settings the app under test runs with (the module's limits, sized for the bench)."""
        ...

    def seed(self, client: httpx.Client, size: Size) -> dict[str, Any]:
        """Data this module's endpoints run against, made through the API; kept in
        `Seed.data[<module>]`. `client` is logged in as the bench user."""
        ...

    def endpoints(self, seed: Seed) -> list[Endpoint]:
        """Endpoints measured against the raw baseline."""
        ...

    def baseline_routes(self) -> list[Route]:
        """The raw baseline's version of `endpoints` (bench/baseline.py mounts them)."""
        ...

    def mix(self, seed: Seed) -> list[Weighted]: ...

    def measure(self, context: Context, sections: Collection[str]) -> dict[str, Any]:
        """The module's sections among `sections`, by name."""
        ...


def mounted() -> dict[str, ModuleBench]:
    """The bench parts of the mounted modules that have one, in main.py's order."""
    found = {}
    for name in MODULES:
        package = f"bench.modules.{name}"
        try:
            module = importlib.import_module(package)
        except ModuleNotFoundError as exc:
            if exc.name != package:
                raise
            continue
        found[name] = cast(ModuleBench, module)
    return found


def sections() -> list[str]:
    return [section for part in mounted().values() for section in part.SECTIONS]
