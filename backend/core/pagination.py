"""Limit/offset pages, in one place: a `PageDep` parameter, a `paged` query, `Page.of`.

    LIST = paged(select(File).where(File.owner_id == bindparam("owner_id")).order_by(...))

    async def list(session, *, owner, page: PageParams) -> Sequence[File]:
        return (await session.scalars(LIST, page.bind(owner_id=owner.id))).all()

    @router.get("", response_model=FilePage)
    async def list_files(session: SessionDep, user: CurrentUser, page: PageDep) -> FilePage:
        return FilePage.of(await service.list(session, owner=user, page=page), page)

The query is built once, at import, with bind parameters for what changes per request (the
page's limit and offset included): building a SQLAlchemy statement costs more CPU than running
it, and a statement built once also keeps its SQL cache key. It fetches one row more than
asked; that row only tells whether another page exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel
from sqlalchemy import BigInteger, Select, bindparam

T = TypeVar("T", bound=BaseModel)
Row = TypeVar("Row", bound=Any)

# OFFSET is a bigint in PostgreSQL: nothing above it.
MAX_OFFSET = 2**63 - 1
_LIMIT = bindparam("page_limit", type_=BigInteger)
_OFFSET = bindparam("page_offset", type_=BigInteger)


def paged(query: Select[Row]) -> Select[Row]:
    """`query` with the page's limit and offset as bind parameters: build it once, run it with
    `page.bind(...)`."""
    return query.limit(_LIMIT).offset(_OFFSET)


@dataclass(frozen=True)
class PageParams:
    limit: int
    offset: int

    def bind(self, **parameters: Any) -> dict[str, Any]:
        """The parameters of a `paged` query: this page's, plus the query's own."""
        return {"page_limit": self.limit + 1, "page_offset": self.offset, **parameters}


async def page_params(
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> PageParams:
    return PageParams(limit=limit, offset=offset)


PageDep = Annotated[PageParams, Depends(page_params)]


class Page(BaseModel, Generic[T]):
    items: list[T]
    limit: int
    offset: int
    has_more: bool

    @classmethod
    def of(cls, rows: Sequence[Any], page: PageParams) -> Page[T]:
        """Build a page from what `page.apply` fetched (up to `limit + 1` ORM rows)."""
        return cls.model_validate(
            {
                "items": rows[: page.limit],
                "limit": page.limit,
                "offset": page.offset,
                "has_more": len(rows) > page.limit,
            },
            from_attributes=True,
        )
