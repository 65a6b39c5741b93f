"""Password hashing (argon2 via pwdlib) and access tokens (PyJWT)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple, TypeVar

import jwt
from anyio import CapacityLimiter, to_thread
from pwdlib import PasswordHash

T = TypeVar("T")

ALGORITHM = "HS256"
_hasher = PasswordHash.recommended()
# Verified against when the user does not exist, so a wrong username costs as much as a wrong
# password and response times do not tell which part was wrong.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


# argon2 takes ~50 ms of a core and 64 MiB per call: run it in threads, a few at a time, so
# logins neither stall the event loop (every other request) nor exhaust memory when many come.
_limiter: CapacityLimiter | None = None


def set_hash_concurrency(total: int) -> None:
    global _limiter
    _limiter = CapacityLimiter(total)


async def _off_loop(function: Callable[[], T]) -> T:
    if _limiter is None:
        set_hash_concurrency(2)
    return await to_thread.run_sync(function, limiter=_limiter)


async def hash_password(password: str) -> str:
    return await _off_loop(lambda: _hasher.hash(password))


async def verify_password(password: str, hashed: str | None) -> bool:
    if hashed is None:
        await _off_loop(lambda: _hasher.verify(password, _DUMMY_HASH))
        return False
    return await _off_loop(lambda: _hasher.verify(password, hashed))


def create_access_token(subject: uuid.UUID, *, version: int, key: str, minutes: int) -> str:
    """A signed token for `subject`; `version` is the user's token version when it was issued."""
    now = datetime.now(UTC)
    claims = {
        "sub": str(subject),
        "ver": version,
        "iat": now,
        "exp": now + timedelta(minutes=minutes),
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


class AccessClaims(NamedTuple):
    user_id: uuid.UUID
    version: int
    expires_at: float  # Unix time


def read_access_token(token: str, *, key: str) -> AccessClaims | None:
    """The token's user id, version and expiry, or None if it is malformed, forged or expired."""
    try:
        claims = jwt.decode(
            token, key, algorithms=[ALGORITHM], options={"require": ["exp", "sub", "ver"]}
        )
        version, expires_at = claims["ver"], claims["exp"]
        if not isinstance(version, int) or not isinstance(expires_at, int | float):
            return None
        return AccessClaims(uuid.UUID(claims["sub"]), version, float(expires_at))
    except (jwt.PyJWTError, ValueError, TypeError):
        return None
