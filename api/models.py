"""Models shared by many endpoints: strict request bodies, path and query parameters,
paging, and the bounded numbers and dates of request fields (CONTRACT.md §1a)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Generic, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
)
from pydantic_core import PydanticCustomError

from services.ids import MAX_BIGINT, NUMBER_PATTERN, id_pattern
from services.rules import MACHINE_ID_PATTERN

T = TypeVar("T")

# Every numeric id column is a bigint: a larger number is refused here, as a field error,
# rather than overflowing in the database driver (a 500).
TenantId = Annotated[int, Field(ge=0, le=MAX_BIGINT, description="0 is the platform itself")]
UserId = Annotated[int, Field(ge=1, le=MAX_BIGINT)]
MachineId = Annotated[str, StringConstraints(pattern=MACHINE_ID_PATTERN)]
NumericId = Annotated[str, StringConstraints(pattern=NUMBER_PATTERN)]


def prefixed_id(prefix: str) -> Any:
    """A path id such as ``alloc-101``."""
    return Annotated[str, StringConstraints(pattern=id_pattern(prefix)),
                     Field(examples=[f"{prefix}-1"])]

LEASE_START_WINDOW = timedelta(days=3650)
# Any later or earlier instant in a filter is no use, and years near 1 or 9999 overflow
# once converted to UTC.
FILTER_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
FILTER_LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise PydanticCustomError("datetime_range", "date out of range") from None


def _near_now(value: datetime) -> datetime:
    if abs(_utc(value) - datetime.now(UTC)) > LEASE_START_WINDOW:
        raise PydanticCustomError("datetime_window", "must lie within 10 years of now")
    return value


def _filter_range(value: datetime) -> datetime:
    if not FILTER_EARLIEST <= _utc(value) < FILTER_LATEST:
        raise PydanticCustomError("datetime_range", "must lie in 1970..2099")
    return value


LeaseStart = Annotated[
    AwareDatetime, AfterValidator(_near_now),
    Field(description="RFC 3339 with a zone; within 10 years (3,650 days) of now, past or "
                      "future"),
]
FilterTime = Annotated[
    AwareDatetime, AfterValidator(_filter_range),
    Field(description="RFC 3339 with a zone, in 1970..2099"),
]


class Body(BaseModel):
    """Base of request bodies: JSON types are not coerced ("5" is not an int); an unknown
    field is an error, so a typo never silently becomes a default (CONTRACT.md §1a)."""

    model_config = ConfigDict(strict=True, extra="forbid")


class Query(BaseModel):
    """Base of query strings: values arrive as text and are converted. Unknown parameters
    are ignored, as most HTTP APIs do (cache busters, tracking tags); the contract makes
    only bodies strict."""

    model_config = ConfigDict(extra="ignore")


class PathParams(BaseModel):
    """Base of a route's path parameters. A value that does not fit is simply not found
    (404, CONTRACT.md §1), never a 400."""


class MachinePath(PathParams):
    id: MachineId


class WindowQuery(Query):
    """A time window ``[from, to)`` in the query string."""

    since: FilterTime | None = Field(None, alias="from",
                                     description="inclusive; RFC 3339 with a zone, in 1970..2099")
    until: FilterTime | None = Field(None, alias="to",
                                     description="exclusive; RFC 3339 with a zone, in 1970..2099")


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
