"""Jobs: asynchronous commands for a machine's agent (reclaim, ssh reset, mounts, tasks)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from storage.db import Executor, Where

_COLUMNS = """id, kind, machine_id, tenant_id, status, params, result, error, attempts,
              created_at, updated_at, sent_at, deadline_at, finished_at"""
_INSERT = f"""
INSERT INTO jobs (kind, machine_id, tenant_id, status, params, result, error, created_by,
                  finished_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
        CASE WHEN $4 IN ('succeeded', 'failed', 'timeout', 'cancelled') THEN now() END)
RETURNING {_COLUMNS}
"""
_GET = f"SELECT {_COLUMNS} FROM jobs WHERE id = $1"
_GET_OF_TENANT = f"SELECT {_COLUMNS} FROM jobs WHERE id = $1 AND tenant_id = $2"
_LOCK = f"SELECT {_COLUMNS} FROM jobs WHERE id = $1 FOR UPDATE"
_FINISH = f"""
UPDATE jobs SET status = $2, result = $3, error = $4, updated_at = now(), finished_at = now()
WHERE id = $1
RETURNING {_COLUMNS}
"""
_CANCEL_OPEN = f"""
UPDATE jobs SET status = 'cancelled', error = $3, updated_at = now(), finished_at = now()
WHERE machine_id = $1 AND kind = $2 AND status IN ('pending', 'sent', 'running')
RETURNING {_COLUMNS}
"""
_OPEN_OF_KIND = f"""
SELECT {_COLUMNS} FROM jobs
WHERE machine_id = $1 AND kind = $2 AND status IN ('pending', 'sent', 'running')
ORDER BY id
"""

_PAGE = f"SELECT {_COLUMNS} FROM jobs{{where}} ORDER BY created_at DESC, id DESC " \
        "LIMIT {limit} OFFSET {offset}"
_COUNT = "SELECT count(*) FROM jobs{where}"

OPEN_STATUSES = ("pending", "sent", "running")
FINAL_STATUSES = ("succeeded", "failed", "timeout", "cancelled")


@dataclass(frozen=True)
class JobFilter:
    kind: str | None = None
    status: str | None = None
    machine_id: str | None = None
    tenant_id: int | None = None


async def insert(db: Executor, *, kind: str, machine_id: str, tenant_id: int | None,
                 params: dict[str, Any], created_by: int | None, status: str = "pending",
                 result: Any = None, error: str | None = None) -> asyncpg.Record:
    return await db.fetchrow(_INSERT, kind, machine_id, tenant_id, status, params, result,
                             error, created_by)


async def get(db: Executor, job_id: int, *, tenant_id: int | None) -> asyncpg.Record | None:
    """The job; with ``tenant_id``, only if it belongs to that tenant."""
    if tenant_id is None:
        return await db.fetchrow(_GET, job_id)
    return await db.fetchrow(_GET_OF_TENANT, job_id, tenant_id)


async def page(db: Executor, flt: JobFilter, *, within_tenant: int | None, limit: int,
               offset: int) -> tuple[list[asyncpg.Record], int]:
    """Newest first. ``within_tenant``: the caller's tenant, which confines the query
    whatever the filter asks (None: platform staff, every tenant)."""
    where = Where()
    if within_tenant is not None:
        where.add("tenant_id = {}", within_tenant)
    if flt.tenant_id is not None:
        where.add("tenant_id = {}", flt.tenant_id)
    if flt.kind:
        where.add("kind = {}", flt.kind)
    if flt.status:
        where.add("status = {}", flt.status)
    if flt.machine_id:
        where.add("machine_id = {}", flt.machine_id)
    total = await db.fetchval(_COUNT.format(where=where.sql), *where.args)
    query = _PAGE.format(where=where.sql, limit=where.param(limit), offset=where.param(offset))
    return await db.fetch(query, *where.args), total


async def lock(conn: asyncpg.Connection, job_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(_LOCK, job_id)


async def finish(conn: asyncpg.Connection, job_id: int, status: str, *, result: Any = None,
                 error: str | None = None) -> asyncpg.Record:
    return await conn.fetchrow(_FINISH, job_id, status, result, error)


async def cancel_open(conn: asyncpg.Connection, machine_id: str, kind: str,
                      reason: str) -> list[asyncpg.Record]:
    return await conn.fetch(_CANCEL_OPEN, machine_id, kind, reason)


async def open_of_kind(db: Executor, machine_id: str, kind: str) -> list[asyncpg.Record]:
    return await db.fetch(_OPEN_OF_KIND, machine_id, kind)

_CLAIM = f"""
UPDATE jobs SET status = 'sent', attempts = attempts + 1, sent_at = now(), updated_at = now(),
       deadline_at = now() + make_interval(secs => $2)
WHERE id IN (SELECT id FROM jobs WHERE machine_id = $1 AND status = 'pending'
             ORDER BY id FOR UPDATE SKIP LOCKED)
RETURNING {_COLUMNS}
"""
_MARK_RUNNING = f"""
UPDATE jobs SET status = 'running', updated_at = now()
WHERE id = $1 AND status = 'sent'
RETURNING {_COLUMNS}
"""
_TIME_OUT = f"""
UPDATE jobs SET status = 'timeout', error = 'no answer from the agent in time',
       updated_at = now(), finished_at = now()
WHERE id IN (SELECT id FROM jobs WHERE status IN ('sent', 'running') AND deadline_at < now()
             ORDER BY deadline_at LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING {_COLUMNS}
"""
_PENDING_MACHINES = "SELECT DISTINCT machine_id FROM jobs WHERE status = 'pending'"


async def claim_pending(db: Executor, machine_id: str, timeout_s: float) -> list[asyncpg.Record]:
    """Hand the machine's pending jobs to its agent: each becomes ``sent`` exactly once,
    even when two hub processes claim at the same moment."""
    return await db.fetch(_CLAIM, machine_id, timeout_s)


async def mark_running(db: Executor, job_id: int) -> asyncpg.Record | None:
    return await db.fetchrow(_MARK_RUNNING, job_id)


async def time_out_overdue(db: Executor, limit: int) -> list[asyncpg.Record]:
    return await db.fetch(_TIME_OUT, limit)


async def pending_machines(db: Executor) -> set[str]:
    return {row["machine_id"] for row in await db.fetch(_PENDING_MACHINES)}
