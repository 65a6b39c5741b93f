"""A language model behind any OpenAI-compatible chat endpoint (`POST {base}/chat/completions`),
its answer streamed: OpenAI, vLLM, Ollama, llama.cpp's server, gateways.

Only what the agent needs: messages and tools in, tokens out as they come (`on_token`), then
the whole reply with its tool calls and its token usage. A 429, a 5xx or a dropped connection
before the answer starts is retried like the embedder's calls; once it has started, a failure is
the turn's failure (its tokens were already shown). With tracing on, each call is a span
`chat <model>` carrying the model, the tokens and (as its duration) the latency.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import httpx

from backend.modules.conversation.exceptions import ModelFailed
from backend.modules.knowledge_base.embeddings import http_cause, retrying

# A reply longer than this (characters), or with more tool calls, is refused: a broken or
# hostile endpoint does not get to fill the worker's memory.
MAX_REPLY_CHARS = 400_000
MAX_TOOL_CALLS = 16


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON, as the model wrote it


@dataclass
class Reply:
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None


class ChatModel:
    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None,
        timeout: float,
        retries: int,
        max_tokens: int,
        tracer: Any = None,
    ) -> None:
        self.model = model
        self.retries = retries
        self.max_tokens = max_tokens
        self.tracer = tracer
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers=headers,
            timeout=timeout,
            # One connection per streaming answer: as many as the worker has open streams.
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
        )

    async def stream(
        self,
        messages: Sequence[dict[str, Any]],
        tools: Sequence[dict[str, Any]],
        on_token: Callable[[str], None],
    ) -> Reply:
        """Ask the model; each piece of its answer goes to `on_token` as it arrives."""
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": list(messages),
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": self.max_tokens,
        }
        if tools:
            payload["tools"] = list(tools)
        with self._span() as span:
            try:
                reply = await self._stream(payload, on_token)
            except ModelFailed as exc:
                if span is not None:
                    from opentelemetry.trace import Status, StatusCode

                    span.set_status(Status(StatusCode.ERROR, exc.detail))
                raise
            if span is not None:
                span.set_attribute("gen_ai.usage.input_tokens", reply.prompt_tokens)
                span.set_attribute("gen_ai.usage.output_tokens", reply.completion_tokens)
                span.set_attribute("gen_ai.response.finish_reasons", [reply.finish_reason or ""])
        return reply

    def _span(self) -> AbstractContextManager[Any]:
        if self.tracer is None:
            return nullcontext()
        from opentelemetry.trace import SpanKind

        span: AbstractContextManager[Any] = self.tracer.start_as_current_span(
            f"chat {self.model}",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.system": "openai",
                "gen_ai.request.model": self.model,
                "gen_ai.request.max_tokens": self.max_tokens,
            },
            record_exception=False,  # an exception's text can name the URL
        )
        return span

    async def _stream(self, payload: dict[str, Any], on_token: Callable[[str], None]) -> Reply:
        reply = Reply()
        calls: dict[int, ToolCall] = {}
        done = False
        try:
            response = await self._open(payload)
            try:
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue  # blank lines, comments (keep-alives), event names
                    data = line[5:].strip()
                    if data == "[DONE]":
                        done = True
                        break
                    self._take(json.loads(data), reply, calls, on_token)
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            # Never its text: httpx names the URL, and a URL can hold credentials.
            raise ModelFailed(f"The language model failed ({http_cause(exc)})") from None
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
            raise ModelFailed(f"The language model answered malformed data ({exc})") from None
        if not done and reply.finish_reason is None:
            raise ModelFailed("The language model's answer stopped before its end")
        reply.tool_calls = [calls[i] for i in sorted(calls)]
        return reply

    async def _open(self, payload: dict[str, Any]) -> httpx.Response:
        """The streaming response, once the model has accepted the request (retried before)."""
        async for attempt in retrying(self.retries):
            with attempt:
                request = self._client.build_request("POST", "chat/completions", json=payload)
                response = await self._client.send(request, stream=True)
                if response.status_code >= 400:
                    await response.aclose()
                    response.raise_for_status()
        return response

    @staticmethod
    def _take(
        chunk: dict[str, Any],
        reply: Reply,
        calls: dict[int, ToolCall],
        on_token: Callable[[str], None],
    ) -> None:
        """One streamed chunk: a piece of text, pieces of tool calls, the usage, the end."""
        if "error" in chunk:
            message = chunk["error"].get("message", "") if isinstance(chunk["error"], dict) else ""
            raise ModelFailed(f"The language model reported an error: {str(message)[:200]}")
        usage = chunk.get("usage")
        if usage:
            reply.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            reply.completion_tokens = int(usage.get("completion_tokens") or 0)
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                reply.content += text
                on_token(text)
            for piece in delta.get("tool_calls") or []:
                index = int(piece.get("index", 0))
                call = calls.get(index)
                if call is None:
                    if len(calls) >= MAX_TOOL_CALLS:
                        raise ModelFailed("The language model asked for too many tool calls")
                    call = calls[index] = ToolCall(id="", name="", arguments="")
                function = piece.get("function") or {}
                call.id += piece.get("id") or ""
                call.name += function.get("name") or ""
                call.arguments += function.get("arguments") or ""
            if choice.get("finish_reason"):
                reply.finish_reason = choice["finish_reason"]
        size = len(reply.content) + sum(len(c.arguments) for c in calls.values())
        if size > MAX_REPLY_CHARS:
            raise ModelFailed("The language model's answer is longer than this service takes")

    async def aclose(self) -> None:
        await self._client.aclose()
