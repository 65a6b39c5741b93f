"""An OpenAI-compatible chat endpoint on loopback (`POST /v1/chat/completions`, streamed as
OpenAI streams it): scripted replies for the tests (text word by word, tool calls in pieces,
errors, a connection dropped midway), and a steady one for the bench (`python -m
tests.support.chat_model --port N --first-token-ms 200 --tokens 50 --token-ms 20`, each token
carrying the monotonic time it left at, so a client measures what lies between).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from tests.support.loopback import read_body, respond


@dataclass
class Step:
    """One reply: `text` streamed word by word, or a search for `search` (a tool call), or an
    error `status`; `drop_after` words and the connection is cut."""

    text: str = ""
    search: str | None = None
    status: int = 200
    drop_after: int | None = None
    first_delay: float = 0.0
    delay: float = 0.0
    gate: asyncio.Event | None = None  # the reply waits for it (a test sets it)


@dataclass
class ScriptedModel:
    """The ASGI app: the next step of `script` per request (`default` when it is empty); every
    request body is kept in `requests`."""

    script: list[Step] = field(default_factory=list)
    default: Step = field(default_factory=lambda: Step(text="An answer."))
    stamped: bool = False  # tokens are the time they left at (the bench)
    requests: list[dict[str, Any]] = field(default_factory=list)
    asked: asyncio.Event = field(default_factory=asyncio.Event)  # set by every request

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":  # a probe
            await respond(send, 404, b"", b"text/plain")
            return
        body = json.loads(await read_body(receive))
        self.requests.append(body)
        self.asked.set()
        step = self.script.pop(0) if self.script else self.default
        if step.status != 200:
            error = json.dumps({"error": {"message": "scripted failure"}}).encode()
            await respond(send, step.status, error, b"application/json")
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )

        async def chunk(delta: dict[str, Any], **extra: Any) -> None:
            data = {"id": "c", "object": "chat.completion.chunk", "model": body["model"]}
            data["choices"] = [{"index": 0, "delta": delta, **extra}]
            await send_data(data)

        async def send_data(data: Any) -> None:
            line = f"data: {json.dumps(data)}\n\n".encode()
            await send({"type": "http.response.body", "body": line, "more_body": True})

        await asyncio.sleep(step.first_delay)
        if step.gate is not None:
            await step.gate.wait()
        words = step.text.split(" ") if step.text else []
        for n, word in enumerate(words):
            if step.drop_after is not None and n == step.drop_after:
                raise ConnectionResetError("scripted: the model went away midway")
            if n:
                await asyncio.sleep(step.delay)
            piece = f"{time.monotonic()!r} " if self.stamped else (word if n == 0 else " " + word)
            await chunk({"content": piece})
        if step.search is not None:
            arguments = json.dumps({"query": step.search})
            half = len(arguments) // 2
            call = {"index": 0, "id": "call_1", "type": "function"}
            await chunk({"tool_calls": [{**call, "function": {"name": "search_knowledge_bases"}}]})
            for part in (arguments[:half], arguments[half:]):
                await chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})
        await chunk({}, finish_reason="tool_calls" if step.search is not None else "stop")
        prompt = len(json.dumps(body["messages"])) // 4
        usage = {"prompt_tokens": prompt, "completion_tokens": len(words) or 1}
        await send_data({"id": "c", "choices": [], "usage": usage})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--first-token-ms", type=float, default=200)
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--token-ms", type=float, default=20)
    args = parser.parse_args()
    steady = Step(
        text=" ".join(["w"] * args.tokens),
        first_delay=args.first_token_ms / 1000,
        delay=args.token_ms / 1000,
    )
    app = ScriptedModel(default=steady, stamped=True)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", backlog=4096)


if __name__ == "__main__":
    main()
