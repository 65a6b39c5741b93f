"""Limit/offset pages: services fetch `limit + 1` rows, `Page.of` tells whether more exist."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

T = TypeVar("T", bound=BaseModel)

# Query parameters of every listing. OFFSET is a bigint in PostgreSQL: nothing above it.
Limit = Annotated[int, Query(ge=1, le=100)]
Offset = Annotated[int, Query(ge=0, le=2**63 - 1)]


class Page(BaseModel, Generic[T]):
    items: list[T]
    limit: int
    offset: int
    has_more: bool

    @classmethod
    def of(cls, rows: Sequence[Any], *, limit: int, offset: int) -> Page[T]:
        """Build a page from up to `limit + 1` ORM rows (the extra one only signals more)."""
        return cls.model_validate(
            {
                "items": rows[:limit],
                "limit": limit,
                "offset": offset,
                "has_more": len(rows) > limit,
            },
            from_attributes=True,
        )
