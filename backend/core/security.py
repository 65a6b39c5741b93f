"""Password hashing (argon2 via pwdlib) and access tokens (PyJWT)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jwt
from pwdlib import PasswordHash

ALGORITHM = "HS256"
_hasher = PasswordHash.recommended()
# Verified against when the user does not exist, so a wrong username costs as much as a wrong
# password and response times do not tell which part was wrong.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, hashed: str | None) -> bool:
    if hashed is None:
        _hasher.verify(password, _DUMMY_HASH)
        return False
    return _hasher.verify(password, hashed)


def create_access_token(subject: uuid.UUID, *, key: str, minutes: int) -> str:
    now = datetime.now(UTC)
    claims = {"sub": str(subject), "iat": now, "exp": now + timedelta(minutes=minutes)}
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def read_access_token(token: str, *, key: str) -> uuid.UUID | None:
    """The token's user id, or None if it is malformed, forged or expired."""
    try:
        claims = jwt.decode(token, key, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]})
        return uuid.UUID(claims["sub"])
    except (jwt.PyJWTError, ValueError, TypeError):
        return None
