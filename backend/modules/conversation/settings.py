from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from pydantic import Field, SecretStr

from backend.core.config import AppSettings
from backend.core.state import provided


class ConversationSettings(AppSettings):
    # LangGraph's checkpointer talks to PostgreSQL through psycopg (this app uses asyncpg): its
    # own pool, at most this many connections per process, beside DB_POOL_SIZE.
    checkpointer_pool_size: int = Field(default=2, ge=1, le=100)
    # Passages the agent takes from the conversation's knowledge bases for one search.
    conversation_passages: int = Field(default=4, ge=1, le=20)

    # The language model: any OpenAI-compatible chat endpoint (OpenAI https://api.openai.com/v1,
    # vLLM http://vllm:8000/v1, Ollama http://ollama:11434/v1, llama.cpp's server, a gateway).
    # Unset: the agent answers extractively with the passages it found, and says so.
    model_base_url: str | None = None
    model_name: str = "gpt-4o-mini"
    model_api_key: SecretStr | None = None
    # Seconds to wait for the model to connect, or between two streamed pieces of its answer.
    model_timeout: float = Field(default=60.0, gt=0)
    # A 429, a 5xx or a dropped connection before the answer starts: retried with backoff.
    model_retries: int = Field(default=3, ge=0, le=10)
    # The most tokens one model call may write.
    model_max_tokens: int = Field(default=1024, ge=1, le=100_000)
    # Searches the model may ask for in one turn (then it must answer with what it has).
    agent_max_tool_calls: int = Field(default=3, ge=0, le=10)
    # Earlier messages of the conversation the model sees with a question.
    agent_history_messages: int = Field(default=20, ge=0, le=200)
    # Tokens (prompt + completion) one user may spend per UTC day, all replicas together
    # (kept in PostgreSQL); past it a turn answers 429 with Retry-After. 0: no limit.
    model_daily_tokens_per_user: int = Field(default=200_000, ge=0)

    # An SSE comment this often on a quiet stream, so idle proxies keep it open.
    sse_heartbeat_seconds: float = Field(default=15.0, gt=0, le=300)


ConversationSettingsDep = Annotated[ConversationSettings, Depends(provided(ConversationSettings))]
