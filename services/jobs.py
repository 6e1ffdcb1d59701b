"""Jobs: asynchronous commands for a machine's agent.

``pending`` → ``sent`` (claimed for the agent, exactly once per attempt) → ``running`` →
``succeeded`` | ``failed``; a sent job not finished by its deadline becomes ``timeout``.
Outcomes are applied in the transaction that records them (a successful ``reclaim`` closes
the lease), and every change is announced as a ``job_update`` event.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from services.alerts import RECLAIM_STUCK, AlertService
from services.allocations import AllocationService
from services.auth import Principal
from services.errors import Conflict, NotFound
from services.events import JOB_UPDATE, EventSink
from services.ids import JOB, format_id
from services.job_events import job_event
from storage import jobs as job_store
from storage.jobs import JobFilter

PLATFORM_TENANT_ID = 0
_TIMEOUT_BATCH = 500


def visible_tenant(principal: Principal) -> int | None:
    """The tenant a caller is confined to; None for platform staff (they see all)."""
    return None if principal.tenant_id == PLATFORM_TENANT_ID else principal.tenant_id


class JobService:
    def __init__(self, pool: asyncpg.Pool, allocations: AllocationService,
                 alerts: AlertService, events: EventSink, timeout_s: float) -> None:
        self._pool = pool
        self._allocations = allocations
        self._alerts = alerts
        self._events = events
        self._timeout_s = timeout_s

    async def get(self, job_id: int, principal: Principal) -> asyncpg.Record:
        row = await job_store.get(self._pool, job_id, tenant_id=visible_tenant(principal))
        if row is None:
            raise NotFound("job not found")
        return row

    async def page(self, flt: JobFilter, principal: Principal, *, limit: int,
                   offset: int) -> tuple[list[asyncpg.Record], int]:
        """Newest first; a tenant's user is confined to its tenant's jobs (in the query,
        whatever ``flt.tenant_id`` says), platform staff see every tenant's."""
        return await job_store.page(self._pool, flt, within_tenant=visible_tenant(principal),
                                    limit=limit, offset=offset)

    async def page_of_tenant(self, tenant_id: int, flt: JobFilter, *, limit: int,
                             offset: int) -> tuple[list[asyncpg.Record], int]:
        """One tenant's jobs only (the platform's own tenant 0 owns none)."""
        return await job_store.page(self._pool, flt, within_tenant=tenant_id, limit=limit,
                                    offset=offset)

    async def claim(self, machine_id: str) -> list[asyncpg.Record]:
        """The machine's pending jobs, now ``sent`` to its agent."""
        jobs = await job_store.claim_pending(self._pool, machine_id, self._timeout_s)
        for job in jobs:
            self._events.publish(JOB_UPDATE, job_event(job))
        return jobs

    async def pending_machines(self) -> set[str]:
        return await job_store.pending_machines(self._pool)

    async def agent_update(self, machine_id: str, job_id: int, status: str, *,
                           result: Any = None, error: str | None = None) -> asyncpg.Record:
        """An agent reports progress on one of its own machine's jobs. Repeating the final
        status is harmless (agents retry); contradicting it is a conflict."""
        async with self._pool.acquire() as conn, conn.transaction():
            job = await job_store.lock(conn, job_id)
            if job is None or job["machine_id"] != machine_id:
                raise NotFound("job not found")
            current = job["status"]
            if status == current or (status == "running" and current in
                                     ("succeeded", "failed")):
                return job
            if current not in ("sent", "running"):
                raise Conflict(f"job is {current}", data={"status": current})
            if status == "running":
                updated = await job_store.mark_running(conn, job_id)
            else:
                updated = await self._finish(conn, job, status, result, error)
        await self._after(updated)
        return updated

    async def finish(self, job_id: int, status: str, *, result: Any = None,
                     error: str | None = None) -> asyncpg.Record:
        """Record a job's final outcome (``succeeded`` or ``failed``) and apply it."""
        async with self._pool.acquire() as conn, conn.transaction():
            job = await job_store.lock(conn, job_id)
            if job is None:
                raise NotFound("job not found")
            if job["status"] not in job_store.OPEN_STATUSES:
                raise Conflict(f"job is already {job['status']}", data={"status": job["status"]})
            finished = await self._finish(conn, job, status, result, error)
        await self._after(finished)
        return finished

    async def _finish(self, conn: asyncpg.Connection, job: asyncpg.Record, status: str,
                      result: Any, error: str | None) -> asyncpg.Record:
        finished = await job_store.finish(conn, job["id"], status, result=result, error=error)
        if job["kind"] == "reclaim":
            await self._allocations.finish_reclaim(conn, finished, status == "succeeded")
        return finished

    async def _after(self, job: asyncpg.Record) -> None:
        """Once committed: announce the change; a reclaim that ended without success
        needs an admin."""
        self._events.publish(JOB_UPDATE, job_event(job))
        if job["kind"] == "reclaim":
            if job["status"] == "succeeded":
                await self._allocations.after_reclaimed(job["machine_id"])
            elif job["status"] in ("failed", "timeout"):
                await self._alerts.raise_(
                    job["machine_id"], RECLAIM_STUCK,
                    f"reclaim {format_id(JOB, job['id'])} {job['status']}: "
                    f"{job['error'] or 'no details'}; force the reclaim to close the lease",
                    {"job_id": format_id(JOB, job["id"])},
                )

    async def time_out_overdue(self) -> int:
        """Jobs sent but not finished by their deadline become ``timeout``; a timed-out
        reclaim leaves the lease reclaiming and raises ``reclaim_stuck`` for an admin."""
        count = 0
        while True:
            jobs = await job_store.time_out_overdue(self._pool, _TIMEOUT_BATCH)
            for job in jobs:
                await self._after(job)
            count += len(jobs)
            if len(jobs) < _TIMEOUT_BATCH:
                return count
