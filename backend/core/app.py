"""The FastAPI app every module is mounted on: state, error contract, OpenAPI, body limits."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from backend.core.config import AppSettings, Settings, SettingsError
from backend.core.handlers import install_error_handlers
from backend.core.limits import BodySizeLimit, HeadAsGet, RetryReadsOnDisconnect
from backend.core.logs import RecordRequests, configure_logging, flush_logs
from backend.core.openapi import install_openapi
from backend.core.request_ids import REQUEST_ID_HEADER, RequestIds
from backend.core.state import AppState
from backend.core.tracing import Tracing


def new_app(
    settings: Iterable[AppSettings],
    *,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
) -> FastAPI:
    """An app with no routes yet. `settings` replace what the environment says, per class;
    every other settings class is read now, so a bad value fails here (`SettingsError`)."""
    state = AppState(settings)
    state.load_settings()
    core = state.get(Settings)
    configure_logging(core.log_level, core.logs_as)
    docs = core.docs_enabled
    tracing = Tracing.start(core)
    app = FastAPI(
        title="backend",
        version="0.1.0",
        lifespan=_with_tracing_and_logs(lifespan, tracing),
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
        telemetry=Tracing.fastapi_config(tracing),
    )
    if tracing is not None:
        state.provide(Tracing, tracing)
    app.state.typed = state
    install_error_handlers(app)
    install_openapi(app)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=core.max_request_bytes,
        idle_timeout=core.request_body_idle_timeout,
    )
    app.add_middleware(RetryReadsOnDisconnect)
    app.add_middleware(HeadAsGet)
    if core.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(core.cors_origins),
            allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type", REQUEST_ID_HEADER],
            expose_headers=[REQUEST_ID_HEADER, "Location", "Retry-After"],
            max_age=600,
        )
    app.add_middleware(RecordRequests, with_metrics=core.metrics)
    # Outermost of ours: every line of the request, its access line included, has its id.
    app.add_middleware(RequestIds)
    return app


def _with_tracing_and_logs(
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    tracing: Tracing | None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """`lifespan`, then the spans and log lines still held written out: a SIGTERM ends uvicorn
    by re-raising the signal, which skips exit handlers."""

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        try:
            async with lifespan(app):
                yield
        finally:
            if tracing is not None:
                await to_thread.run_sync(tracing.stop)
            flush_logs()

    return run


def app_or_exit(factory: Callable[[], FastAPI]) -> FastAPI:
    """The app for `uvicorn`: a bad setting exits with one line, not a traceback."""
    try:
        app = factory()
    except SettingsError as exc:
        raise SystemExit(f"backend: {exc} (set in the environment or .env)") from None
    tune_gc_for_serving()
    return app


# Young-generation collections after this many net allocations (CPython's default: 700), and
# older generations as rarely. A request allocates a few thousand objects, nearly all freed by
# reference counting; the collector only needs to find cycles, and can look seldom.
GC_THRESHOLDS = (7_000, 20, 20)


def tune_gc_for_serving() -> None:
    """Keep the garbage collector's pauses out of request latency.

    What is imported by now (modules, classes, routes, the app) lives as long as the process:
    `gc.freeze()` moves it out of every later collection, so a full collection walks what
    requests allocate, not the whole heap (unfrozen, one took ~150 ms under load).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
