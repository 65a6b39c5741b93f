"""Failed-login throttling per account and per client address, shared by every replica.

A fixed window per key: the first failure opens it for LOGIN_FAILURE_WINDOW seconds; at
LOGIN_MAX_FAILURES failures the key is refused (429, Retry-After = the rest of the window) until
the window ends. A successful login clears its account's count. One statement per check or
update, in PostgreSQL, so three replicas count one attacker once.
"""

from __future__ import annotations

import math
import unicodedata
from datetime import timedelta

from sqlalchemy import case, delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.errors import AppError
from backend.core.schemas import is_storable
from backend.modules.user.models import LoginThrottle

# Rows whose window ended this long ago are deleted when failures are recorded.
_KEEP_EXPIRED = timedelta(hours=1)


class TooManyAttempts(AppError):
    status_code = 429
    detail = "Too many failed logins: try again later"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Too many failed logins: try again in {retry_after} seconds")
        self.headers = {"Retry-After": str(retry_after)}


def keys(login: str, address: str | None) -> list[str]:
    """The counters a login attempt touches: the account it names, and where it comes from."""
    account = unicodedata.normalize("NFKC", login).strip().lower() if is_storable(login) else ""
    found = [f"account:{account[:300]}"]
    if address:
        found.append(f"address:{address}")
    return found


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
