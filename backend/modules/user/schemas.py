from __future__ import annotations

import re
import unicodedata
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    WithJsonSchema,
)

from backend.core.pagination import Page
from backend.core.schemas import InputModel

# Deliberately plain: one @, no spaces, a dot in the domain. Deliverability is proven by mail.
_EMAIL = re.compile(r"^[^@\s\x00]+@[^@\s\x00]+\.[^@\s\x00]+$")
# Categories that never belong in a name people type: controls, format characters (zero-width
# spaces and joiners, bidirectional overrides), private use, surrogates, unassigned.
# A domain's label: letters (any script) and digits, hyphens inside, at most 63.
_DOMAIN_LABEL = re.compile(r"^[^\W_](?:[\w-]{0,61}[^\W_])?$")
_INVISIBLE = {"Cc", "Cf", "Co", "Cs", "Cn"}
# Scripts with letters that look like Latin ones ("paypal" with a Cyrillic "a" in it).
_LOOKALIKE_SCRIPTS = {"CYRILLIC", "GREEK"}


def canonical(value: Any) -> Any:
    """NFKC form: full-width letters and `ada` are one name. Refuses invisible characters."""
    if not isinstance(value, str):
        return value  # the str validation that follows says what is wrong
    value = unicodedata.normalize("NFKC", value).strip()
    for ch in value:
        if unicodedata.category(ch) in _INVISIBLE:
            raise ValueError(f"must not contain invisible or control characters (U+{ord(ch):04X})")
    return value


def _scripts(part: str) -> set[str]:
    return {unicodedata.name(ch, "?").split(" ")[0] for ch in part if ch.isalpha()}


def _check_email(value: str) -> str:
    value = canonical(value)
    if not _EMAIL.match(value):
        raise ValueError("not a valid email address")
    local, domain = value.rsplit("@", 1)
    labels = domain.split(".")
    if not all(_DOMAIN_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        raise ValueError(f"not a valid email address: {domain!r} is not a domain name")
    for part in (local, *labels):
        scripts = _scripts(part)
        if "LATIN" in scripts and scripts & _LOOKALIKE_SCRIPTS:
            raise ValueError(
                f"mixes Latin and {'/'.join(sorted(scripts & _LOOKALIKE_SCRIPTS)).title()} "
                f"letters in {part!r} (a look-alike of another address?)"
            )
    return value


_USERNAME = r"^[A-Za-z0-9_.-]{3,64}$"

# The published schemas say what is accepted, so clients (and the schema fuzzer) can tell.
Email = Annotated[
    str,
    StringConstraints(max_length=320),
    AfterValidator(_check_email),
    WithJsonSchema(
        {"type": "string", "format": "email", "maxLength": 320, "pattern": _EMAIL.pattern}
    ),
]
# NFKC first, then ASCII only: full-width and look-alike letters cannot make a second "ada".
Username = Annotated[
    str,
    BeforeValidator(canonical),
    StringConstraints(pattern=_USERNAME),
    WithJsonSchema({"type": "string", "pattern": _USERNAME}),
]
# argon2 takes any length; the cap keeps a request from buying seconds of CPU.
Password = Annotated[str, StringConstraints(min_length=8, max_length=128)]


class UserCreate(InputModel):
    email: Email
    username: Username
    password: Password


class UserUpdate(InputModel):
    email: Email | None = None
    username: Username | None = None


class PasswordChange(InputModel):
    current_password: str = Field(max_length=128)
    new_password: Password


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    username: str
    is_active: bool
    is_superuser: bool
    created_at: datetime


UserPage = Page[UserRead]


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"


class UserAdminUpdate(InputModel):
    """What a superuser may change on another account."""

    # Strict: `0`, `"yes"` are not booleans (a typed client never sends them).
    is_active: StrictBool | None = None
    is_superuser: StrictBool | None = None
