"""Leases: allocate (one machine or a batch, all or nothing), renew, reclaim (through an
agent job, or forced), and the reclaim of expired leases.

Allocation is atomic twice over: the conditional ``UPDATE machines ... WHERE
allocation_status = 'idle'`` must change every requested row, and the unique partial index
``allocations_one_open_per_machine`` refuses a second open lease. The loser of a race gets a
409, never a 500.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.errors import Conflict, NotFound, ValidationFailed
from services.ids import JOB, format_id
from storage import allocations as allocation_store
from storage import jobs as job_store
from storage import machines as machine_store
from storage import tasks as task_store
from storage import tenants as tenant_store
from storage.allocations import AllocationFilter

log = logging.getLogger(__name__)

LEASE_EXPIRED = "lease expired"
MAX_BATCH = 500
_EXPIRY_BATCH = 200


@dataclass(frozen=True)
class Reclaim:
    job_id: int
    allocation_id: int
    forced: bool


class AllocationService:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def allocate(self, machine_ids: list[str], *, tenant_id: int, months: int,
                       start_time: datetime | None, remark: str | None,
                       actor: int | None) -> list[int]:
        """Lease every machine to the tenant, or none; returns allocation ids in order."""
        _check_batch(machine_ids)
        async with self._pool.acquire() as conn, conn.transaction():
            await self._check_tenant(conn, tenant_id)
            locked = {row["id"]: row for row in await machine_store.lock_many(conn, machine_ids)}
            blocked = [
                {"id": mid, "reason": "not found" if mid not in locked
                 else f"machine is {locked[mid]['allocation_status']}"}
                for mid in machine_ids
                if mid not in locked or locked[mid]["allocation_status"] != "idle"
            ]
            if blocked:
                raise _not_allocatable(blocked)
            changed = await machine_store.mark_allocated(conn, machine_ids, tenant_id)
            if changed != set(machine_ids):  # cannot happen under the row locks; belt and braces
                raise _not_allocatable([{"id": m, "reason": "machine is not idle"}
                                        for m in machine_ids if m not in changed])
            try:
                return await allocation_store.insert_many(
                    conn, machine_ids, tenant_id=tenant_id, start_time=start_time,
                    months=months, remark=remark, created_by=actor,
                )
            except asyncpg.UniqueViolationError:
                raise _not_allocatable([{"id": m, "reason": "machine already has an open lease"}
                                        for m in machine_ids]) from None

    async def _check_tenant(self, conn: asyncpg.Connection, tenant_id: int) -> None:
        status = await tenant_store.status_for_share(conn, tenant_id)
        if status is None:
            raise NotFound("tenant not found")
        if status != "active":
            raise Conflict("tenant is disabled", data={"tenant_id": tenant_id, "status": status})

    async def renew(self, allocation_id: int, months: int) -> asyncpg.Record:
        if not await allocation_store.renew(self._pool, allocation_id, months):
            status = await allocation_store.status(self._pool, allocation_id)
            if status is None:
                raise NotFound("allocation not found")
            raise Conflict(f"only an active allocation can be renewed; this one is {status}",
                           data={"status": status})
        return await self.get(allocation_id)

    async def get(self, allocation_id: int) -> asyncpg.Record:
        row = await allocation_store.get(self._pool, allocation_id)
        if row is None:
            raise NotFound("allocation not found")
        return row

    async def page(self, flt: AllocationFilter, *, limit: int,
                   offset: int) -> tuple[list[asyncpg.Record], int]:
        return await allocation_store.page(self._pool, flt, limit=limit, offset=offset)

    async def recent(self, limit: int) -> list[asyncpg.Record]:
        return await allocation_store.recent(self._pool, limit)

    async def reclaim(self, machine_id: str, *, reason: str, force: bool,
                      actor: int | None) -> Reclaim:
        """Start reclaiming the machine's lease: machine to maintenance and a ``reclaim``
        job for its agent (wipe data, reset keys). ``force`` closes the lease at once, also
        one whose reclaim is already waiting on a silent agent."""
        async with self._pool.acquire() as conn, conn.transaction():
            lease = await allocation_store.open_for_machine(conn, machine_id)
            if lease is None:
                state = await machine_store.allocation_status(conn, machine_id)
                if state is None:
                    raise NotFound("machine not found")
                raise Conflict(f"machine has no lease to reclaim; it is {state}",
                               data={"allocation_status": state})
            if force:
                return await self._force(conn, machine_id, lease, reason, actor)
            if lease.status == "reclaiming":
                pending = await job_store.open_of_kind(conn, machine_id, "reclaim")
                raise Conflict("a reclaim is already in progress; use force to close it now",
                               data={"job_id": format_id(JOB, pending[0]["id"])
                                     if pending else None})
            job_id = await self._start(conn, machine_id, lease, reason, actor)
        return Reclaim(job_id=job_id, allocation_id=lease.id, forced=False)

    async def _start(self, conn: asyncpg.Connection, machine_id: str,
                     lease: allocation_store.OpenAllocation, reason: str,
                     actor: int | None) -> int:
        await allocation_store.mark_reclaiming(conn, lease.id)
        await machine_store.mark_reclaiming(conn, machine_id, f"reclaim: {reason}")
        job = await job_store.insert(
            conn, kind="reclaim", machine_id=machine_id, tenant_id=lease.tenant_id,
            params={"allocation_id": lease.id, "reason": reason}, created_by=actor,
        )
        return job["id"]

    async def _force(self, conn: asyncpg.Connection, machine_id: str,
                     lease: allocation_store.OpenAllocation, reason: str,
                     actor: int | None) -> Reclaim:
        cancelled = await job_store.cancel_open(conn, machine_id, "reclaim",
                                                "superseded by a forced reclaim")
        await self._close(conn, machine_id, lease, reason)
        if cancelled:
            job_id = cancelled[0]["id"]
        else:
            # A record that the lease was closed without asking the agent to wipe it.
            job = await job_store.insert(
                conn, kind="reclaim", machine_id=machine_id, tenant_id=lease.tenant_id,
                params={"allocation_id": lease.id, "reason": reason, "force": True},
                created_by=actor, status="cancelled",
                error="forced: closed without waiting for the agent",
            )
            job_id = job["id"]
        return Reclaim(job_id=job_id, allocation_id=lease.id, forced=True)

    async def _close(self, conn: asyncpg.Connection, machine_id: str,
                     lease: allocation_store.OpenAllocation, reason: str) -> None:
        await allocation_store.close(conn, lease.id, reason)
        await machine_store.release(conn, machine_id)
        await task_store.stop_live_on_machine(conn, machine_id, lease.tenant_id,
                                              "machine reclaimed")

    async def finish_reclaim(self, conn: asyncpg.Connection, job: asyncpg.Record,
                             succeeded: bool) -> None:
        """Called in the transaction that records a reclaim job's outcome. Success closes
        the lease and frees the machine; failure leaves both for an admin to force."""
        if not succeeded:
            log.warning("reclaim job failed; lease stays reclaiming",
                        extra={"job_id": job["id"], "machine_id": job["machine_id"]})
            return
        lease = await allocation_store.open_for_machine(conn, job["machine_id"])
        params: dict[str, Any] = job["params"] or {}
        if lease is None or lease.id != params.get("allocation_id"):
            return  # already closed (forced meanwhile)
        await self._close(conn, job["machine_id"], lease, params.get("reason") or "reclaimed")

    async def reclaim_expired(self) -> int:
        """Start reclaiming every lease past its ``expires_at``; returns how many."""
        started = 0
        while True:
            expired = await allocation_store.expired(self._pool, _EXPIRY_BATCH)
            progress = 0
            for row in expired:
                async with self._pool.acquire() as conn, conn.transaction():
                    lease = await allocation_store.open_for_machine(conn, row["machine_id"])
                    # re-checked under the lock: a renewal may have won the race
                    if lease is None or lease.status != "active" or not lease.expired:
                        continue
                    await self._start(conn, row["machine_id"], lease, LEASE_EXPIRED, None)
                    progress += 1
            started += progress
            if len(expired) < _EXPIRY_BATCH or progress == 0:
                return started


def _check_batch(machine_ids: list[str]) -> None:
    seen: set[str] = set()
    errors = []
    for i, machine_id in enumerate(machine_ids):
        if machine_id in seen:
            errors.append({"field": f"machine_ids[{i}]", "message": "duplicate machine id"})
        seen.add(machine_id)
    if errors:
        raise ValidationFailed(errors)


def _not_allocatable(machines: list[dict[str, str]]) -> Conflict:
    names = ", ".join(m["id"] for m in machines)
    return Conflict(f"not allocatable: {names}", data={"machines": machines})
