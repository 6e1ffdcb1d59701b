"""Allocations (leases of a machine to a tenant). ``expires_at`` is computed here, by
PostgreSQL in UTC: calendar months, so Jan 31 + 1 month is Feb 28 (or 29)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from storage.db import Executor, Where

_ITEM = """
SELECT a.id, a.machine_id, coalesce(m.name, a.machine_name) AS machine_name, a.tenant_id,
       t.name AS tenant_name, a.status, a.start_time, a.expires_at, a.duration_months,
       a.remark, a.created_at, a.closed_at, a.close_reason
FROM allocations a
JOIN tenants t ON t.id = a.tenant_id
LEFT JOIN machines m ON m.id = a.machine_id
"""
_GET = _ITEM + " WHERE a.id = $1"
_PAGE = _ITEM + "{where} ORDER BY a.created_at DESC, a.id DESC LIMIT {limit} OFFSET {offset}"
_COUNT = "SELECT count(*) FROM allocations a{where}"
_RECENT = _ITEM + " ORDER BY a.created_at DESC, a.id DESC LIMIT $1"

_INSERT = """
INSERT INTO allocations (machine_id, machine_name, tenant_id, start_time, expires_at,
                         duration_months, remark, created_by)
SELECT m.id, m.name, $2, s.start, s.start + make_interval(months => $4), $4, $5, $6
FROM unnest($1::text[]) WITH ORDINALITY AS ids(id, n)
JOIN machines m ON m.id = ids.id,
     (SELECT coalesce($3::timestamptz, now()) AS start) s
ORDER BY ids.n
RETURNING id, machine_id
"""
_OPEN_FOR_MACHINE = """
SELECT id, tenant_id, status, expires_at, expires_at <= now() AS expired FROM allocations
WHERE machine_id = $1 AND status <> 'reclaimed'
FOR UPDATE
"""
_MARK_RECLAIMING = "UPDATE allocations SET status = 'reclaiming' WHERE id = $1"
_CLOSE = """
UPDATE allocations SET status = 'reclaimed', closed_at = now(), close_reason = $2
WHERE id = $1 AND status <> 'reclaimed'
RETURNING id
"""
# Renewal recomputes from the start so that month ends do not drift (Jan 31 -> Feb 28 ->
# Mar 31, not Mar 28). Only an active lease whose new end lies in $3..$4 is renewed (the
# UPDATE runs whether or not its rows are read); the lease's state as it was is returned
# either way, to say why not.
_RENEW = """
WITH lease AS (
    SELECT id, status, start_time + make_interval(months => duration_months + $2) AS ends
    FROM allocations WHERE id = $1
    FOR UPDATE
), renewed AS (
    UPDATE allocations a SET duration_months = a.duration_months + $2, expires_at = lease.ends
    FROM lease
    WHERE a.id = lease.id AND lease.status = 'active' AND lease.ends BETWEEN $3 AND $4
    RETURNING a.id
)
SELECT status, ends BETWEEN $3 AND $4 AS fits FROM lease
"""
_EXPIRED = """
SELECT id, machine_id FROM allocations
WHERE status = 'active' AND expires_at <= now()
ORDER BY expires_at
LIMIT $1
"""
_EXPIRING = """
SELECT a.id, a.machine_id, a.expires_at, t.name AS tenant_name
FROM allocations a JOIN tenants t ON t.id = a.tenant_id
WHERE a.status = 'active' AND a.expires_at <= now() + make_interval(days => $1)
"""
_ADD_MONTHS = "SELECT $1::timestamptz + make_interval(months => $2)"


@dataclass(frozen=True)
class AllocationFilter:
    status: str | None = None
    tenant_id: int | None = None
    machine_id: str | None = None


@dataclass(frozen=True, slots=True)
class OpenAllocation:
    id: int
    tenant_id: int
    status: str
    expires_at: datetime
    expired: bool


async def insert_many(conn: asyncpg.Connection, machine_ids: list[str], *, tenant_id: int,
                      start_time: datetime | None, months: int, remark: str | None,
                      created_by: int | None) -> list[int]:
    rows = await conn.fetch(_INSERT, machine_ids, tenant_id, start_time, months, remark,
                            created_by)
    return [row["id"] for row in rows]


async def open_for_machine(conn: asyncpg.Connection, machine_id: str) -> OpenAllocation | None:
    """The machine's open lease, locked for the caller's transaction."""
    row = await conn.fetchrow(_OPEN_FOR_MACHINE, machine_id)
    return OpenAllocation(**dict(row)) if row is not None else None


async def mark_reclaiming(conn: asyncpg.Connection, allocation_id: int) -> None:
    await conn.execute(_MARK_RECLAIMING, allocation_id)


async def close(conn: asyncpg.Connection, allocation_id: int, reason: str) -> bool:
    return await conn.fetchval(_CLOSE, allocation_id, reason) is not None


async def renew(db: Executor, allocation_id: int, months: int, *, earliest_end: datetime,
                latest_end: datetime) -> asyncpg.Record | None:
    """Renews an active lease if its new end lies in ``earliest_end..latest_end``.
    ``(status, fits)`` as they were: renewed if the status was active and the new end
    fits; None if there is no such lease."""
    return await db.fetchrow(_RENEW, allocation_id, months, earliest_end, latest_end)


async def get(db: Executor, allocation_id: int) -> asyncpg.Record | None:
    return await db.fetchrow(_GET, allocation_id)


async def recent(db: Executor, limit: int) -> list[asyncpg.Record]:
    return await db.fetch(_RECENT, limit)


async def expired(db: Executor, limit: int) -> list[asyncpg.Record]:
    return await db.fetch(_EXPIRED, limit)


async def add_months(db: Executor, when: datetime, months: int) -> datetime:
    return await db.fetchval(_ADD_MONTHS, when, months)


async def page(db: Executor, flt: AllocationFilter, *, limit: int,
               offset: int) -> tuple[list[asyncpg.Record], int]:
    where = Where()
    if flt.status:
        where.add("a.status = {}", flt.status)
    if flt.tenant_id is not None:
        where.add("a.tenant_id = {}", flt.tenant_id)
    if flt.machine_id:
        where.add("a.machine_id = {}", flt.machine_id)
    total = await db.fetchval(_COUNT.format(where=where.sql), *where.args)
    query = _PAGE.format(where=where.sql, limit=where.param(limit), offset=where.param(offset))
    return await db.fetch(query, *where.args), total


async def expiring_within(db: Executor, days: int) -> list[asyncpg.Record]:
    """Active leases ending within ``days`` (or already past their end)."""
    return await db.fetch(_EXPIRING, days)
