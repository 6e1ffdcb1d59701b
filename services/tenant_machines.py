"""The customer's view of its leased machines; every query is scoped to the caller's
tenant in SQL, so another tenant's machine is simply not found."""

from __future__ import annotations

import asyncpg

from services.errors import Conflict, NotFound
from services.events import EventSink
from services.job_events import announce_queued
from storage import jobs as job_store
from storage import machines as machine_store


class TenantMachineService:
    def __init__(self, pool: asyncpg.Pool, events: EventSink) -> None:
        self._pool = pool
        self._events = events

    async def list(self, tenant_id: int) -> list[asyncpg.Record]:
        return await machine_store.of_tenant(self._pool, tenant_id)

    async def get(self, tenant_id: int, machine_id: str) -> asyncpg.Record:
        row = await machine_store.one_of_tenant(self._pool, tenant_id, machine_id)
        if row is None:
            raise NotFound("machine not found")
        return row

    async def reset_ssh(self, tenant_id: int, machine_id: str, public_key: str | None,
                        actor: int) -> int:
        """Ask the agent to reset the machine's SSH access; returns the job id."""
        machine = await self.get(tenant_id, machine_id)
        if machine["allocation_state"] != "active":
            raise Conflict("the machine is being reclaimed",
                           data={"allocation_status": machine["allocation_state"]})
        job = await job_store.insert(
            self._pool, kind="ssh_reset", machine_id=machine_id, tenant_id=tenant_id,
            params={"public_key": public_key}, created_by=actor,
        )
        announce_queued(self._events, job)
        return job["id"]
