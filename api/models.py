"""Models shared by many endpoints: strict request bodies, paging."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class Body(BaseModel):
    """Base of request bodies: JSON types are not coerced ("5" is not an int); unknown
    fields are ignored (CONTRACT.md §1a)."""

    model_config = ConfigDict(strict=True, extra="ignore")


class Query(BaseModel):
    """Base of query strings: values arrive as text and are converted."""

    model_config = ConfigDict(extra="ignore")


class PageQuery(Query):
    page: int = Field(1, ge=1, le=1_000_000)
    page_size: int = Field(10, ge=1, le=100)

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size


class Page(BaseModel, Generic[T]):
    list: list[T]
    total: int
    page: int
    page_size: int
