"""Failed-login throttling per account and per client address, shared by every replica.

A fixed window per key: the first failure opens it for LOGIN_FAILURE_WINDOW seconds; at
LOGIN_MAX_FAILURES failures the key is refused (429, Retry-After = the rest of the window) until
the window ends. A successful login clears its account's count. One statement per check or
update, in PostgreSQL, so three replicas count one attacker once.

Keys are digests of fixed length, whatever a client sends: an address is what the client's
headers made it (X-Forwarded-For, behind a trusted proxy) and could be any length. An account is
counted by its id, so its email and its username share one count.

The trade-off, accepted: the per-account limit lets anyone who knows a login hold that account
at 429 by failing on purpose, for a window at a time (Retry-After says how long, and nothing is
locked for good). Without it, a botnet rotating addresses could guess one account's password
without limit; an attacker keeping a victim out must keep paying failures, each also counted
against an address it owns.
"""

from __future__ import annotations

import hashlib
import math
from datetime import timedelta

from sqlalchemy import case, delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from backend.modules.user.exceptions import TooManyAttempts
from backend.modules.user.models import LoginThrottle

# Rows whose window ended this long ago are deleted when failures are recorded.
_KEEP_EXPIRED = timedelta(hours=1)


def keys(account: str, address: str | None) -> list[str]:
    """The counters a login attempt touches: the account it names (its id, or the login as
    typed when no account has it), and where it comes from. Account first."""
    found = [f"account:{_digest(account)}"]
    if address:
        found.append(f"address:{_digest(address)}")
    return found


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


async def check(session: AsyncSession, *, keys: list[str], max_failures: int) -> None:
    """Raise `TooManyAttempts` while any of these keys is over the limit."""
    remaining = await session.scalar(
        select(func.max(func.extract("epoch", LoginThrottle.window_ends - func.now()))).where(
            LoginThrottle.key.in_(keys),
            LoginThrottle.failures >= max_failures,
            LoginThrottle.window_ends > func.now(),
        )
    )
    if remaining is not None:
        raise TooManyAttempts(max(math.ceil(float(remaining)), 1))


async def record_failure(session: AsyncSession, *, keys: list[str], window: float) -> None:
    ends = func.now() + timedelta(seconds=window)
    statement = insert(LoginThrottle).values(
        [{"key": key, "failures": 1, "window_ends": ends} for key in keys]
    )
    expired = LoginThrottle.window_ends <= func.now()
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[LoginThrottle.key],
            set_={
                # An ended window starts over; an open one counts on.
                "failures": case((expired, 1), else_=LoginThrottle.failures + 1),
                "window_ends": case(
                    (expired, statement.excluded.window_ends), else_=LoginThrottle.window_ends
                ),
            },
        )
    )
    await session.execute(
        delete(LoginThrottle).where(LoginThrottle.window_ends < func.now() - _KEEP_EXPIRED)
    )


async def clear(session: AsyncSession, *, key: str) -> None:
    await session.execute(delete(LoginThrottle).where(LoginThrottle.key == key))
