# syntax=docker/dockerfile:1
# One image serves the API (default command) and migrates the database (`alembic upgrade head`).
#   docker build -t backend .
#   docker run --rm --env-file .env backend alembic upgrade head
#   docker run --rm --env-file .env -p 8000:8000 backend

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

# Build: dependencies in their own layer, cached until pyproject.toml or uv.lock change.
FROM python:3.11-slim-bookworm AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-install-project
# Then the source: the app, its migrations and their config.
COPY README.md alembic.ini ./
COPY backend ./backend
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev

# Runtime: the virtualenv and the source only; no uv, no compilers, no dev tools, not root.
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH="/app/.venv/bin:$PATH" \
    UVICORN_HOST=0.0.0.0 \
    UVICORN_PORT=8000 \
    UVICORN_HTTP=backend.core.http:BoundedHttpProtocol \
    FILE_STORAGE_DIR=/data/files
RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home app \
    && mkdir -p /data/files \
    && chown app:app /data/files
WORKDIR /app
COPY --from=build --chown=root:root /app /app
USER 10001:10001
EXPOSE 8000
CMD ["uvicorn", "backend.main:app", "--no-access-log"]
