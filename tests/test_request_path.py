"""What keeps every endpoint fast by construction, whichever module it is in.

- Handlers and dependencies are `async def`: FastAPI runs a plain `def` one in a worker thread,
  a hand-off that cost a third of `GET /files`'s throughput when two small dependencies did it.
- Middleware is pure ASGI: `BaseHTTPMiddleware` wraps every request in extra tasks and streams.
- A handler's returned model is not validated again: FastAPI passes it through pydantic, which
  keeps an instance of the declared model as it is unless the model asks to be revalidated.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter
from starlette.middleware.base import BaseHTTPMiddleware

import backend
from backend.core.config import PROJECT_ROOT
from backend.health import Readiness

BACKEND = PROJECT_ROOT / "backend"


def backend_modules() -> list[ModuleType]:
    return [
        importlib.import_module(info.name)
        for info in pkgutil.walk_packages(backend.__path__, "backend.")
        if info.name != "backend.devserver" and not info.name.startswith("backend.alembic")
    ]


def runs_in_thread(call: Any) -> bool:
    if inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call):
        return False
    # An instance with an async __call__ (OAuth2PasswordBearer) is awaited too.
    return inspect.isclass(call) or not inspect.iscoroutinefunction(type(call).__call__)


def threaded(router: APIRouter) -> list[str]:
    """The handlers and backend-defined dependencies of `router`'s own routes that are `def`."""
    found = []
    for route in router.routes:
        if not isinstance(route, APIRoute):
            continue
        pending = [route.dependant]
        while pending:
            dependant = pending.pop()
            pending += dependant.dependencies
            call = dependant.call
            if getattr(call, "__module__", "").startswith("backend.") and runs_in_thread(call):
                found.append(f"{route.path}: {getattr(call, '__qualname__', call)}")
    return found


def test_handlers_and_dependencies_never_run_in_a_thread() -> None:
    routers = [
        value
        for module in backend_modules()
        for value in vars(module).values()
        if isinstance(value, APIRouter)
    ]
    assert len(routers) >= 4
    offenders = sorted({what for router in routers for what in threaded(router)})
    assert not offenders, (
        "make these `async def` (FastAPI runs a plain `def` in its thread pool; do blocking "
        f"work inside with `await asyncio.to_thread(...)`): {offenders}"
    )


def plain_limit() -> int:
    return 1


def test_the_check_catches_a_plain_dependency() -> None:
    router = APIRouter()

    @router.get("/x")
    def handler(x: Annotated[int, Depends(plain_limit)]) -> int:
        return x

    handler.__module__ = plain_limit.__module__ = "backend.example"
    assert sorted(threaded(router)) == ["/x: plain_limit", f"/x: {handler.__qualname__}"]


def test_middleware_is_pure_asgi(app: FastAPI) -> None:
    for middleware in app.user_middleware:
        assert not issubclass(middleware.cls, BaseHTTPMiddleware), middleware  # type: ignore[arg-type]


def response_models() -> list[type[BaseModel]]:
    return [
        value
        for module in backend_modules()
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, BaseModel)
        and value.__module__ == module.__name__
    ]


def test_a_returned_model_is_serialized_without_being_validated_again() -> None:
    models = response_models()
    assert len(models) > 5
    for model in models:
        assert model.model_config.get("revalidate_instances", "never") == "never", model
    # What FastAPI does with a handler's return value before dumping it to JSON:
    returned = Readiness(status="ready", current=["a"], head=["a"])
    assert TypeAdapter(Readiness).validate_python(returned, from_attributes=True) is returned
