"""The base of request bodies: every string in one can be stored and searched in PostgreSQL."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, field_validator


def check_storable(value: str) -> str:
    """PostgreSQL text holds neither NUL nor lone surrogates (JSON can carry both)."""
    if "\x00" in value:
        raise ValueError("must not contain NUL (\\u0000) characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it holds a lone surrogate)") from None
    return value


def is_storable(value: str) -> bool:
    try:
        check_storable(value)
    except ValueError:
        return False
    return True


class InputModel(BaseModel):
    """Request bodies derive from this: an unstorable string is a 422 naming its field."""

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        if isinstance(value, str):
            return check_storable(value)
        return value
