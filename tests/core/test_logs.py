"""Logs as an operator reads them: JSON lines from a real uvicorn process in production, one
per request with its route template, the request id on each line of the request, no secret."""

from __future__ import annotations

import json
import logging
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import URL

from backend.core.logs import (
    RecordRequests,
    configure_logging,
    flush_logs,
    request_log,
    route_template,
)
from backend.core.request_ids import RequestIds, usable_request_id
from tests.support import db
from tests.support.server import uvicorn_server

PASSWORD = "correct horse battery staple"
SECRET = "s" * 48


def log_lines(storage: Path, base: str) -> list[dict[str, Any]]:
    port = base.rsplit(":", 1)[1]
    text = (storage.parent / f"uvicorn-{port}.log").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def test_every_line_is_json_with_the_request_id_and_no_secret(
    migrated_db: URL, tmp_path: Path
) -> None:
    storage = tmp_path / "files"
    settings = {"ENVIRONMENT": "production", "JWT_SECRET": SECRET}
    async with (
        uvicorn_server(migrated_db, storage, **settings) as base,
        httpx.AsyncClient(base_url=f"{base}/api/v1") as client,
    ):
        account = {"email": "logs@example.com", "username": "logs", "password": PASSWORD}
        assert (await client.post("/auth/register", json=account)).status_code == 201
        login = await client.post("/auth/token", data={"username": "logs", "password": PASSWORD})
        token = login.json()["access_token"]
        refused = await client.post(
            "/auth/token",
            data={"username": "logs", "password": PASSWORD + "!"},
            headers={"X-Request-ID": "login-attempt-1"},
        )
        assert refused.status_code == 401
        assert refused.headers["X-Request-ID"] == "login-attempt-1"
        me = await client.get(
            "/users/me",
            headers={"Authorization": f"Bearer {token}", "X-Request-ID": "me.42"},
        )
        assert me.headers["X-Request-ID"] == "me.42"
        generated = await client.delete(
            f"/users/{uuid.uuid4()}",
            params={"t": token},
            headers={"Authorization": f"Bearer {token}"},
        )
        forged = await client.get("/users/me", headers={"X-Request-ID": "x\tforged line"})
    lines = log_lines(storage, base)  # json.loads fails on any line that is not JSON

    attempt = [line for line in lines if line["request_id"] == "login-attempt-1"]
    assert [line["message"] for line in attempt] == [
        "login refused: invalid credentials",
        "POST /api/v1/auth/token 401 " + f"{attempt[1]['duration_ms']:.2f}ms",
    ]
    [me_line] = [line for line in lines if line["request_id"] == "me.42"]
    assert me_line | {"duration_ms": 0, "time": ""} == {
        "time": "",
        "level": "INFO",
        "logger": "backend.request",
        "message": me_line["message"],
        "request_id": "me.42",
        "method": "GET",
        "route": "/api/v1/users/me",
        "status": 200,
        "duration_ms": 0,
    }
    # No id sent: one is made, returned and logged. A path parameter is logged by its name.
    made = generated.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    [made_line] = [line for line in lines if line["request_id"] == made]
    assert (made_line["route"], made_line["status"]) == ("/api/v1/users/{user_id}", 403)
    # An id that would forge log lines is replaced, not echoed.
    assert usable_request_id(forged.headers["X-Request-ID"])
    assert forged.headers["X-Request-ID"] != "x\tforged line"

    text = "\n".join(json.dumps(line) for line in lines)
    for secret in (PASSWORD, token, SECRET, db.sync_url(migrated_db)):
        assert secret not in text
    assert "?t=" not in text  # query strings (where tokens travel) are never logged


def test_a_route_template_names_its_parameters_and_unmatched_paths_are_one_label() -> None:
    class Route:
        path = "/files/{file_id}"

    scope = {"route": Route(), "path": "/api/v1/files/abc"}
    assert route_template({**scope, "path_params": {"file_id": "abc"}}) == (
        "/api/v1/files/{file_id}"
    )
    assert route_template({"path": "/wp-admin/setup.php", "path_params": {}}) == "<unmatched>"


async def _one_request(app: Any) -> None:
    scope = {"type": "http", "method": "GET", "path": "/x", "headers": [], "route": object()}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: Any) -> None:
        pass

    await app(scope, receive, send)


async def test_request_lines_reach_a_handler_a_team_adds(capsys: Any) -> None:
    """The request line skips the logging machinery only while our handler alone would get
    it: the line is the same either way, and a handler added for it receives it."""

    async def ok(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    configure_logging("INFO", "json")
    app = RequestIds(RecordRequests(ok, with_metrics=False))
    kept: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kept.append(record)

    added = Keep()
    try:
        await _one_request(app)  # the direct path
        request_log.addHandler(added)
        await _one_request(app)  # through logging, to both handlers
    finally:
        request_log.removeHandler(added)
        flush_logs()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["message"][:11] for line in lines] == ["GET /x 204 "] * 2
    assert [list(line) for line in lines] == [list(lines[1])] * 2  # same fields, same order
    assert lines[0]["request_id"] != lines[1]["request_id"]
    assert [record.getMessage()[:11] for record in kept] == ["GET /x 204 "]
