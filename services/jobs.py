"""Jobs as their owners see them, and the recording of a job's outcome."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.allocations import AllocationService
from services.auth import Principal
from services.errors import Conflict, NotFound
from storage import jobs as job_store

PLATFORM_TENANT_ID = 0


def visible_tenant(principal: Principal) -> int | None:
    """The tenant a caller is confined to; None for platform staff (they see all)."""
    return None if principal.tenant_id == PLATFORM_TENANT_ID else principal.tenant_id


class JobService:
    def __init__(self, pool: asyncpg.Pool, allocations: AllocationService) -> None:
        self._pool = pool
        self._allocations = allocations

    async def get(self, job_id: int, principal: Principal) -> asyncpg.Record:
        row = await job_store.get(self._pool, job_id, tenant_id=visible_tenant(principal))
        if row is None:
            raise NotFound("job not found")
        return row

    async def finish(self, job_id: int, status: str, *, result: Any = None,
                     error: str | None = None) -> asyncpg.Record:
        """Record a job's final outcome (``succeeded`` or ``failed``) and apply it."""
        async with self._pool.acquire() as conn, conn.transaction():
            job = await job_store.lock(conn, job_id)
            if job is None:
                raise NotFound("job not found")
            if job["status"] not in job_store.OPEN_STATUSES:
                raise Conflict(f"job is already {job['status']}", data={"status": job["status"]})
            finished = await job_store.finish(conn, job_id, status, result=result, error=error)
            if job["kind"] == "reclaim":
                await self._allocations.finish_reclaim(conn, finished, status == "succeeded")
            return finished
