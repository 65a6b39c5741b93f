"""Typed application state: settings and what the lifespans build, found by their type.

`create_app` makes one `AppState` holding every settings class; each lifespan (the database's,
each module router's) adds what it builds under the type handlers ask for (`Storage`,
`Embedder`, ...) and takes it away at shutdown. Handlers never read `app.state`: they ask for
a typed dependency made by `provided(SomeType)`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol, TypeVar, cast

from fastapi import Request
from starlette.applications import Starlette

from backend.core.config import AppSettings, settings_classes

T = TypeVar("T")


class ReadinessChecks(dict[str, Callable[[], Awaitable[None]]]):
    """What `/readyz` checks after the database, by name: a module's lifespan adds what it
    cannot serve without (`"file storage"`). A check raises, with a message saying what is
    wrong, when the part is not usable."""


class BackgroundLoop(Protocol):
    """A module's background loop (ingestion), watched by the worker's `/healthz`."""

    @property
    def last_turn(self) -> float:
        """`time.monotonic()` when the loop last turned."""
        ...

    @property
    def stuck_after(self) -> float:
        """Seconds without a turn after which the loop counts as stuck (the pod is restarted)."""
        ...

    @property
    def processed(self) -> int:
        """Items the loop has finished since start."""
        ...


class BackgroundLoops(dict[str, BackgroundLoop]):
    """The background loops running in this process, by name: a module's lifespan adds the
    loops it starts where background work runs (`BACKGROUND_IN_PROCESS`, the worker)."""


class AppState:
    def __init__(self, settings: Iterable[AppSettings] = ()) -> None:
        self._items: dict[type, object] = {type(value): value for value in settings}
        self._items[ReadinessChecks] = ReadinessChecks()
        self._items[BackgroundLoops] = BackgroundLoops()

    def load_settings(self) -> None:
        """Read every settings class not given to the constructor (`SettingsError` if bad)."""
        for kind in settings_classes():
            self.get(kind)

    def provide(self, kind: type[T], value: T) -> None:
        self._items[kind] = value

    def find(self, kind: type[T]) -> T | None:
        """The `kind` provided, or None (for what is optional: `Tracing` when it is off)."""
        return cast(T | None, self._items.get(kind))

    def remove(self, kind: type) -> None:
        self._items.pop(kind, None)

    def get(self, kind: type[T]) -> T:
        if kind not in self._items:
            if not issubclass(kind, AppSettings):
                raise LookupError(
                    f"no {kind.__name__} in the app state: the lifespan of the module that "
                    f"provides it has not run (is its router mounted, and the app started?)"
                )
            self._items[kind] = kind.load()
        return cast(T, self._items[kind])


def app_state(app: Starlette) -> AppState:
    """The app's state (the one place that reads `app.state`)."""
    state: AppState = app.state.typed
    return state


def provided(kind: type[T]) -> Callable[[Request], Awaitable[T]]:
    """A dependency returning the app's `kind`: a settings class or a resource a lifespan built.

    `StorageDep = Annotated[Storage, Depends(provided(Storage))]`
    """

    # async although it never waits: FastAPI runs a plain `def` dependency in a worker thread.
    async def dependency(request: Request) -> T:
        return app_state(request.app).get(kind)

    dependency.__name__ = f"provided_{kind.__name__}"
    return dependency
