"""What the modules above users do when an account is deleted, without users importing them.

A module that keeps something of a user's outside the rows that cascade (the file module's
blobs, a conversation's agent state) adds a hook from its lifespan:

    state.get(AccountHooks).on_delete.append(delete_my_things)

Each hook runs in the deletion's transaction, before the user's row goes; what lives outside the
database is removed after the commit (`after_commit`), so a failed deletion keeps everything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from backend.modules.user.models import User

AccountHook = Callable[[AsyncSession, User], Awaitable[None]]


@dataclass
class AccountHooks:
    on_delete: list[AccountHook] = field(default_factory=list)

    async def deleting(self, session: AsyncSession, user: User) -> None:
        for hook in self.on_delete:
            await hook(session, user)
