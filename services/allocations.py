"""Leases: allocate (one machine or a batch, all or nothing), renew, reclaim (through an
agent job, or forced), the reclaim of expired leases and the lease-expiring notice.

Allocation is atomic twice over: the conditional ``UPDATE machines ... WHERE
allocation_status = 'idle'`` must change every requested row, and the unique partial index
``allocations_one_open_per_machine`` refuses a second open lease. The loser of a race gets a
409, never a 500. Events (machine_status, job_update) and alert changes are published only
after the transaction commits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.alerts import LEASE_EXPIRING, RECLAIM_STUCK, AlertService
from services.errors import Conflict, NotFound, ValidationFailed
from services.events import JOB_UPDATE, EventSink
from services.ids import ALLOCATION, JOB, format_id
from services.job_events import announce_machines, announce_queued, job_event
from storage import allocations as allocation_store
from storage import jobs as job_store
from storage import machines as machine_store
from storage import tasks as task_store
from storage import tenants as tenant_store
from storage.allocations import AllocationFilter, OpenAllocation
from storage.db import EARLIEST, LATEST

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
    def __init__(self, pool: asyncpg.Pool, alerts: AlertService, events: EventSink) -> None:
        self._pool = pool
        self._alerts = alerts
        self._events = events

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
                ids = await allocation_store.insert_many(
                    conn, machine_ids, tenant_id=tenant_id, start_time=start_time,
                    months=months, remark=remark, created_by=actor,
                )
            except asyncpg.UniqueViolationError:
                raise _not_allocatable([{"id": m, "reason": "machine already has an open lease"}
                                        for m in machine_ids]) from None
        await self._announce(machine_ids)
        return ids

    async def _check_tenant(self, conn: asyncpg.Connection, tenant_id: int) -> None:
        status = await tenant_store.status_for_share(conn, tenant_id)
        if status is None:
            raise NotFound("tenant not found")
        if status != "active":
            raise Conflict("tenant is disabled", data={"tenant_id": tenant_id, "status": status})

    async def renew(self, allocation_id: int, months: int) -> asyncpg.Record:
        outcome = await allocation_store.renew(self._pool, allocation_id, months,
                                               earliest_end=EARLIEST, latest_end=LATEST)
        if outcome is None:
            raise NotFound("allocation not found")
        if outcome["status"] != "active":
            raise Conflict("only an active allocation can be renewed; this one is "
                           f"{outcome['status']}", data={"status": outcome["status"]})
        if not outcome["fits"]:
            # beyond what a timestamp can show (a lease stored before dates were bounded):
            # the lease is left as it was
            raise ValidationFailed([{"field": "duration_months",
                                     "message": "the lease would end outside the years "
                                                "1 to 9999"}])
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
                job = await self._force(conn, machine_id, lease, reason, actor)
            elif lease.status == "reclaiming":
                pending = await job_store.open_of_kind(conn, machine_id, "reclaim")
                raise Conflict("a reclaim is already in progress; use force to close it now",
                               data={"job_id": format_id(JOB, pending[0]["id"])
                                     if pending else None})
            else:
                job = await self._start(conn, machine_id, lease, reason, actor)
        if force:
            self._events.publish(JOB_UPDATE, job_event(job))
            await self.after_reclaimed(machine_id)
        else:
            announce_queued(self._events, job)
            await self._announce([machine_id])
        return Reclaim(job_id=job["id"], allocation_id=lease.id, forced=force)

    async def _start(self, conn: asyncpg.Connection, machine_id: str, lease: OpenAllocation,
                     reason: str, actor: int | None) -> asyncpg.Record:
        await allocation_store.mark_reclaiming(conn, lease.id)
        await machine_store.mark_reclaiming(conn, machine_id, f"reclaim: {reason}")
        return await job_store.insert(
            conn, kind="reclaim", machine_id=machine_id, tenant_id=lease.tenant_id,
            params={"allocation_id": lease.id, "reason": reason}, created_by=actor,
        )

    async def _force(self, conn: asyncpg.Connection, machine_id: str, lease: OpenAllocation,
                     reason: str, actor: int | None) -> asyncpg.Record:
        cancelled = await job_store.cancel_open(conn, machine_id, "reclaim",
                                                "superseded by a forced reclaim")
        await self._close(conn, machine_id, lease, reason)
        if cancelled:
            return cancelled[0]
        # A record that the lease was closed without asking the agent to wipe the machine.
        return await job_store.insert(
            conn, kind="reclaim", machine_id=machine_id, tenant_id=lease.tenant_id,
            params={"allocation_id": lease.id, "reason": reason, "force": True},
            created_by=actor, status="cancelled",
            error="forced: closed without waiting for the agent",
        )

    async def _close(self, conn: asyncpg.Connection, machine_id: str, lease: OpenAllocation,
                     reason: str) -> None:
        await allocation_store.close(conn, lease.id, reason)
        await machine_store.release(conn, machine_id)
        await task_store.stop_live_on_machine(conn, machine_id, lease.tenant_id,
                                              "machine reclaimed")

    async def finish_reclaim(self, conn: asyncpg.Connection, job: asyncpg.Record,
                             succeeded: bool) -> None:
        """Called in the transaction that records a reclaim job's outcome. Success closes
        the lease and frees the machine; failure leaves both for an admin to force."""
        if not succeeded:
            log.warning("reclaim job did not succeed; lease stays reclaiming",
                        extra={"job_id": job["id"], "machine_id": job["machine_id"]})
            return
        lease = await allocation_store.open_for_machine(conn, job["machine_id"])
        params: dict[str, Any] = job["params"] or {}
        if lease is None or lease.id != params.get("allocation_id"):
            return  # already closed (forced meanwhile)
        await self._close(conn, job["machine_id"], lease, params.get("reason") or "reclaimed")

    async def after_reclaimed(self, machine_id: str) -> None:
        """Once a reclaim has committed: nothing is stuck any more, tell the dashboards."""
        await self._alerts.resolve(machine_id, RECLAIM_STUCK)
        await self._alerts.resolve(machine_id, LEASE_EXPIRING)
        await self._announce([machine_id])

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
                    job = await self._start(conn, row["machine_id"], lease, LEASE_EXPIRED,
                                            None)
                announce_queued(self._events, job)
                await self._announce([row["machine_id"]])
                progress += 1
            started += progress
            if len(expired) < _EXPIRY_BATCH or progress == 0:
                return started

    async def notify_expiring(self, notice_days: int) -> None:
        """``lease_expiring`` alerts for active leases ending within ``notice_days``;
        resolved once renewed past the window or closed."""
        expiring = await allocation_store.expiring_within(self._pool, notice_days)
        for row in expiring:
            await self._alerts.raise_(
                row["machine_id"], LEASE_EXPIRING,
                f"lease {format_id(ALLOCATION, row['id'])} of {row['tenant_name']} ends "
                f"{row['expires_at'].isoformat()}",
                {"allocation_id": format_id(ALLOCATION, row["id"]),
                 "expires_at": row["expires_at"].isoformat()},
            )
        current = {row["machine_id"] for row in expiring}
        for machine_id in await self._alerts.machines_with_open(LEASE_EXPIRING) - current:
            await self._alerts.resolve(machine_id, LEASE_EXPIRING)

    async def _announce(self, machine_ids: list[str]) -> None:
        announce_machines(self._events, await machine_store.states(self._pool, machine_ids))


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
