"""Usage (CONTRACT.md §4c): what a tenant leased in a window and how much of it the GPUs
measured busy, per machine. Attributed by lease, never by the machine's current tenant:
a machine reclaimed and leased to someone else since still counts for the tenant that
held it in the window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from services.errors import NotFound, ValidationFailed
from services.telemetry import TelemetryService
from storage import tenants as tenant_store
from storage import usage as usage_store

DEFAULT_WINDOW = timedelta(days=30)
# A year and a leap day: a calendar year's report always fits, and the query stays bounded.
MAX_WINDOW = timedelta(days=366)
_DIGITS = 4  # hours to a third of a second


def window(since: datetime | None, until: datetime | None,
           now: datetime) -> tuple[datetime, datetime]:
    """The window asked for, in UTC: ``until`` defaults to now, ``since`` to 30 days
    before it."""
    until = (until or now).astimezone(UTC)
    since = since.astimezone(UTC) if since else until - DEFAULT_WINDOW
    if since >= until:
        raise ValidationFailed([{"field": "to", "message": "must be after from"}])
    if until - since > MAX_WINDOW:
        raise ValidationFailed([{"field": "to", "message": "must be at most 366 days after "
                                                           "from"}])
    return since, until


class UsageService:
    def __init__(self, pool: asyncpg.Pool, telemetry: TelemetryService) -> None:
        self._pool = pool
        self._telemetry = telemetry

    async def of_tenant(self, tenant_id: int, since: datetime | None,
                        until: datetime | None) -> dict[str, Any]:
        """``{from, to, machines}`` for the window; lease time is counted up to now."""
        now = datetime.now(UTC)
        since, until = window(since, until, now)
        rolled_1h, rolled_1m = await self._telemetry.watermarks()
        rows = await usage_store.of_tenant(
            self._pool, tenant_id, since=since, until=min(until, now),
            first_hour=since.replace(minute=0, second=0, microsecond=0),
            rolled_1h=rolled_1h, rolled_1m=rolled_1m)
        return {"from": since, "to": until, "machines": [_rounded(row) for row in rows]}

    async def of_customer(self, tenant_id: int, since: datetime | None,
                          until: datetime | None) -> dict[str, Any]:
        """As ``of_tenant``, for staff: NotFound for a tenant that does not exist (an empty
        list would not tell a typo from a customer that leased nothing)."""
        if await tenant_store.get(self._pool, tenant_id) is None:
            raise NotFound("customer not found")
        return await self.of_tenant(tenant_id, since, until)


def _rounded(row: asyncpg.Record) -> dict[str, Any]:
    return {"machine_id": row["machine_id"],
            **{name: None if row[name] is None else round(row[name], _DIGITS)
               for name in ("leased_hours", "gpu_hours", "busy_gpu_hours")}}
