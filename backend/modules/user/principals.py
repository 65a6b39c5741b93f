"""Authenticated users kept for a few seconds, so most requests skip the user query and the
token's signature check.

A security trade-off with a bound (`AUTH_CACHE_SECONDS`, 0 turns it off): a change to a user
made through this process (password, deactivation, profile, deletion) forgets the entry as it
commits; a change made by another replica (or by SQL outside the app) is seen here within the
bound. A request never shares an object with another: each hit is a fresh detached `User`.

Verified tokens are kept as long, never past their own expiry: a token string seen with a valid
signature carries the same claims the next time. Its version is still compared with the user's
on every request, so a password change or deactivation ends it like an uncached one.
"""

from __future__ import annotations

import time
import uuid
import weakref
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import instance_dict, instance_state

from backend.core.security import AccessClaims
from backend.modules.user.models import User

_MAPPER = inspect(User)
_COLUMNS = [attribute.key for attribute in _MAPPER.column_attrs]


def detached_user(values: dict[str, Any]) -> User:
    """A detached `User` holding `values` as loaded (no pending changes), as a query that just
    read them would leave it once its session closed.

    What `User(**values)` + `make_transient_to_detached` also give, at a tenth of their cost:
    the constructor records every value as a change to undo again (20 us, a tenth of a cached
    `GET /users/me`).
    """
    user: User = _MAPPER.class_manager.new_instance()
    instance_dict(user).update(values)
    instance_state(user).key = _MAPPER.identity_key_from_primary_key((values["id"],))
    return user


class PrincipalCache:
    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[uuid.UUID, tuple[float, dict[str, Any]]] = {}
        self._tokens: dict[str, tuple[float, AccessClaims]] = {}
        # Bumped when a user is forgotten: a load that started before the change is not kept.
        self._generations: dict[uuid.UUID, int] = {}
        _LIVE.add(self)

    def get(self, user_id: uuid.UUID) -> User | None:
        entry = self._entries.get(user_id)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del self._entries[user_id]
            return None
        return detached_user(entry[1])

    def claims(self, token: str) -> AccessClaims | None:
        """The claims of a token verified within the bound and not expired since, if any."""
        entry = self._tokens.get(token)
        if entry is None:
            return None
        if entry[0] < time.monotonic() or entry[1].expires_at <= time.time():
            del self._tokens[token]
            return None
        return entry[1]

    def put_claims(self, token: str, claims: AccessClaims) -> None:
        """Remember a token whose signature and expiry were just checked."""
        if self.ttl <= 0:
            return
        if len(self._tokens) >= self.max_entries:
            del self._tokens[next(iter(self._tokens))]
        self._tokens[token] = (time.monotonic() + self.ttl, claims)

    def generation(self, user_id: uuid.UUID) -> int:
        """Taken before loading a user, handed to `put` with what was loaded."""
        return self._generations.get(user_id, 0)

    def put(self, user: User, generation: int) -> None:
        if self.ttl <= 0 or self._generations.get(user.id, 0) != generation:
            return
        if len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]  # the oldest
        values = {key: getattr(user, key) for key in _COLUMNS}
        self._entries[user.id] = (time.monotonic() + self.ttl, values)

    def forget(self, user_id: uuid.UUID) -> None:
        self._entries.pop(user_id, None)
        self._generations[user_id] = self._generations.get(user_id, 0) + 1


_LIVE: weakref.WeakSet[PrincipalCache] = weakref.WeakSet()
_CHANGED = "principals_changed"


def _note_changed_users(session: Session, _: object) -> None:
    changed = {obj.id for obj in (*session.dirty, *session.deleted) if isinstance(obj, User)}
    if changed:
        session.info.setdefault(_CHANGED, set()).update(changed)


def _forget_changed_users(session: Session) -> None:
    for user_id in session.info.pop(_CHANGED, ()):
        for cache in list(_LIVE):
            cache.forget(user_id)


def _drop_notes(session: Session, *_: object) -> None:
    session.info.pop(_CHANGED, None)


event.listen(Session, "after_flush", _note_changed_users)
event.listen(Session, "after_commit", _forget_changed_users)
event.listen(Session, "after_soft_rollback", _drop_notes)
