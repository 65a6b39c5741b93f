"""The base of request bodies: every string in one can be stored and searched in PostgreSQL."""

from __future__ import annotations

from typing import Any

from pydantic import (
    AfterValidator,
    BaseModel,
    GetJsonSchemaHandler,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

# Published on every string of a request body that has no pattern of its own.
NO_NUL = r"^[^\u0000]*$"
# A string with something besides whitespace in it (and no NUL).
NOT_BLANK = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"


def _strip_not_blank(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be blank")
    return value


def not_blank(
    max_length: int | None = None,
) -> tuple[StringConstraints, AfterValidator, WithJsonSchema]:
    """For `Annotated[str, *not_blank(n)]`: at most n characters as sent, then stripped, and
    something must be left (checked in that order, as the published schema says)."""
    schema: dict[str, Any] = {"type": "string", "minLength": 1, "pattern": NOT_BLANK}
    if max_length is not None:
        schema["maxLength"] = max_length
    return (
        StringConstraints(min_length=1, max_length=max_length),
        AfterValidator(_strip_not_blank),
        WithJsonSchema(schema),
    )


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

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # The published schema says it too, so clients (and the schema fuzzer) can tell.
        schema = handler(core_schema)
        for prop in handler.resolve_ref_schema(schema).get("properties", {}).values():
            for option in prop.get("anyOf", [prop]):
                if option.get("type") == "string" and not {"pattern", "format"} & set(option):
                    option["pattern"] = NO_NUL
        return schema
