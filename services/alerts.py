"""Alerts: raised and resolved by the rules (liveness, GPU health, disk, leases, stuck
reclaims), acknowledged by admins. One open alert per (machine, rule): raising again only
refreshes ``last_seen_at``, also when two hub processes raise it at once."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from services.errors import Conflict, NotFound
from services.events import ALERT, EventSink
from storage import alerts as alert_store
from storage.alerts import AlertFilter, TenantScope

log = logging.getLogger(__name__)

MACHINE_OFFLINE = "machine_offline"
GPU_OVERHEAT = "gpu_overheat"
GPU_XID = "gpu_xid"
GPU_ECC = "gpu_ecc"
GPU_REMAPPED_ROWS = "gpu_remapped_rows"
DISK_FULL = "disk_full"
LEASE_EXPIRING = "lease_expiring"
RECLAIM_STUCK = "reclaim_stuck"

SEVERITY = {
    MACHINE_OFFLINE: "critical",
    GPU_OVERHEAT: "warning",
    GPU_XID: "critical",
    GPU_ECC: "critical",
    GPU_REMAPPED_ROWS: "warning",
    DISK_FULL: "warning",
    LEASE_EXPIRING: "info",
    RECLAIM_STUCK: "critical",
}
# Rules for events rather than states: they resolve after a quiet period.
EVENT_RULES = (GPU_XID, GPU_ECC)
# What a tenant sees of its machines (CONTRACT.md §3a: offline, health, disk, lease
# expiring); a stuck reclaim is for the platform's staff to force.
TENANT_RULES = (MACHINE_OFFLINE, GPU_OVERHEAT, GPU_XID, GPU_ECC, GPU_REMAPPED_ROWS, DISK_FULL,
                LEASE_EXPIRING)


def alert_event(row: asyncpg.Record) -> dict[str, Any]:
    """The alert as CONTRACT.md §3 shows it (also the payload of ``alert`` events)."""
    return {
        "id": f"alert-{row['id']}",
        "machine_id": row["machine_id"],
        "tenant_id": row["tenant_id"],
        "rule": row["rule"],
        "severity": row["severity"],
        "status": row["status"],
        "message": row["message"],
        "details": row["details"],
        "first_seen_at": row["first_seen_at"],
        "last_seen_at": row["last_seen_at"],
        "resolved_at": row["resolved_at"],
        "acknowledged_by": row["acknowledged_by"],
        "acknowledged_at": row["acknowledged_at"],
    }


class AlertService:
    def __init__(self, pool: asyncpg.Pool, events: EventSink) -> None:
        self._pool = pool
        self._events = events

    async def raise_(self, machine_id: str, rule: str, message: str,
                     details: dict[str, Any] | None = None, *,
                     severity: str | None = None) -> bool:
        """Open (or refresh) the alert; True if it is new."""
        return bool(await self.raise_many([machine_id], rule, message, details,
                                          severity=severity))

    async def raise_many(self, machine_ids: list[str], rule: str, message: str,
                         details: dict[str, Any] | None = None, *,
                         severity: str | None = None) -> int:
        """The same alert for many machines in one statement; returns how many are new."""
        rows = await alert_store.raise_alerts(self._pool, machine_ids, rule,
                                              severity or SEVERITY[rule], message, details or {})
        return self.announce_raised(rows, rule, message)

    def announce_raised(self, rows: list[asyncpg.Record], rule: str, message: str) -> int:
        """Tell everyone about the alerts among ``rows`` (raised or refreshed, as
        ``storage.alerts.raise_alerts`` returns them, committed) that are new."""
        new = [row for row in rows if row["inserted"]]
        for row in new:
            self._events.publish(ALERT, alert_event(row))
        if new:
            log.warning("alerts raised", extra={"rule": rule, "alert_message": message,
                                                 "machines": [r["machine_id"] for r in new]})
        return len(new)

    async def resolve(self, machine_id: str, rule: str) -> bool:
        return bool(await self.resolve_many([machine_id], rule))

    async def resolve_many(self, machine_ids: list[str], rule: str) -> int:
        return self.announce_resolved(await alert_store.resolve(self._pool, machine_ids, rule))

    def announce_resolved(self, rows: list[asyncpg.Record]) -> int:
        """Tell everyone about alerts just resolved (committed)."""
        for row in rows:
            self._events.publish(ALERT, alert_event(row))
        return len(rows)

    async def resolve_quiet(self, quiet_s: float) -> int:
        """Resolve event alerts (XID, ECC) not seen again for ``quiet_s``."""
        since = datetime.now(UTC) - timedelta(seconds=quiet_s)
        rows = await alert_store.resolve_quiet(self._pool, list(EVENT_RULES), since)
        for row in rows:
            self._events.publish(ALERT, alert_event(row))
        return len(rows)

    async def machines_with_open(self, rule: str) -> set[str]:
        return await alert_store.open_of_rule(self._pool, rule)

    async def acknowledge(self, alert_id: int, user_id: int) -> asyncpg.Record:
        if not await alert_store.acknowledge(self._pool, alert_id, user_id):
            row = await alert_store.get(self._pool, alert_id)
            if row is None:
                raise NotFound("alert not found")
            if row["status"] == "resolved":
                raise Conflict("the alert is resolved", data={"status": "resolved"})
            return row  # already acknowledged: acknowledging again changes nothing
        row = await alert_store.get(self._pool, alert_id)
        self._events.publish(ALERT, alert_event(row))
        return row

    async def page(self, flt: AlertFilter, *, limit: int,
                   offset: int) -> tuple[list[asyncpg.Record], int]:
        return await alert_store.page(self._pool, flt, limit=limit, offset=offset)

    async def page_of_tenant(self, tenant_id: int, flt: AlertFilter, *, limit: int,
                             offset: int) -> tuple[list[asyncpg.Record], int]:
        """The tenant's alerts only, confined in the query: another tenant's machine in
        the filter simply matches nothing, as an unknown one does."""
        return await alert_store.page(self._pool, flt, limit=limit, offset=offset,
                                      scope=TenantScope(tenant_id, TENANT_RULES))
