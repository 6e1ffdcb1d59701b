"""Alerts: one open alert per (machine, rule), enforced by a unique partial index."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from storage.db import Executor, Where

_COLUMNS = """a.id, a.machine_id, a.tenant_id, a.rule, a.severity, a.status, a.message,
              a.details, a.first_seen_at, a.last_seen_at, a.resolved_at, a.acknowledged_at,
              u.username AS acknowledged_by"""
_FROM = " FROM alerts a LEFT JOIN users u ON u.id = a.acknowledged_by"
# Insert, or refresh the open alert of the same rule; `inserted` tells which happened.
_RAISE = f"""
WITH upsert AS (
    INSERT INTO alerts AS a (machine_id, tenant_id, rule, severity, message, details)
    SELECT m.id, m.tenant_id, $2, $3, $4, $5 FROM machines m WHERE m.id = ANY($1::text[])
    ON CONFLICT (machine_id, rule) WHERE status <> 'resolved'
    DO UPDATE SET last_seen_at = now(), message = EXCLUDED.message,
                  details = EXCLUDED.details, severity = EXCLUDED.severity
    RETURNING a.*, (xmax = 0) AS inserted
)
SELECT a.inserted, {_COLUMNS}
FROM upsert a LEFT JOIN users u ON u.id = a.acknowledged_by
"""
_RESOLVE = f"""
WITH resolved AS (
    UPDATE alerts SET status = 'resolved', resolved_at = now()
    WHERE machine_id = ANY($1::text[]) AND rule = $2 AND status <> 'resolved'
    RETURNING *
)
SELECT {_COLUMNS} FROM resolved a LEFT JOIN users u ON u.id = a.acknowledged_by
"""
_RESOLVE_QUIET = f"""
WITH resolved AS (
    UPDATE alerts SET status = 'resolved', resolved_at = now()
    WHERE rule = ANY($1::text[]) AND status <> 'resolved' AND last_seen_at < $2
    RETURNING *
)
SELECT {_COLUMNS} FROM resolved a LEFT JOIN users u ON u.id = a.acknowledged_by
"""
_ACK = """
UPDATE alerts SET status = 'acknowledged', acknowledged_by = $2, acknowledged_at = now()
WHERE id = $1 AND status = 'active'
RETURNING id
"""
_GET = f"SELECT {_COLUMNS}{_FROM} WHERE a.id = $1"
_PAGE = f"SELECT {_COLUMNS}{_FROM}{{where}} ORDER BY a.last_seen_at DESC, a.id DESC " \
        "LIMIT {limit} OFFSET {offset}"
_COUNT = "SELECT count(*) FROM alerts a{where}"
_OPEN_OF_RULE = "SELECT machine_id FROM alerts WHERE rule = $1 AND status <> 'resolved'"


# A status filter's value -> the statuses it selects; "open" is what needs attention.
STATUSES = {"open": ["active", "acknowledged"], "active": ["active"],
            "acknowledged": ["acknowledged"], "resolved": ["resolved"]}


@dataclass(frozen=True)
class AlertFilter:
    status: str = "open"
    severity: str | None = None
    machine_id: str | None = None
    rule: str | None = None


async def raise_alerts(db: Executor, machine_ids: list[str], rule: str, severity: str,
                       message: str, details: dict[str, Any]) -> list[asyncpg.Record]:
    """The open alert of each existing machine (``inserted`` true if new)."""
    return await db.fetch(_RAISE, machine_ids, rule, severity, message, details)


async def resolve(db: Executor, machine_ids: list[str], rule: str) -> list[asyncpg.Record]:
    """The alerts this resolved."""
    return await db.fetch(_RESOLVE, machine_ids, rule)


async def resolve_quiet(db: Executor, rules: list[str],
                        quiet_since: datetime) -> list[asyncpg.Record]:
    return await db.fetch(_RESOLVE_QUIET, rules, quiet_since)


async def acknowledge(db: Executor, alert_id: int, user_id: int) -> bool:
    return await db.fetchval(_ACK, alert_id, user_id) is not None


async def get(db: Executor, alert_id: int) -> asyncpg.Record | None:
    return await db.fetchrow(_GET, alert_id)


async def open_of_rule(db: Executor, rule: str) -> set[str]:
    return {row["machine_id"] for row in await db.fetch(_OPEN_OF_RULE, rule)}


@dataclass(frozen=True)
class TenantScope:
    """What a tenant's user may see: the alerts raised while its lease held the machine
    (``alerts.tenant_id``), of these rules only."""
    tenant_id: int
    rules: tuple[str, ...]


async def page(db: Executor, flt: AlertFilter, *, limit: int, offset: int,
               scope: TenantScope | None = None) -> tuple[list[asyncpg.Record], int]:
    where = Where()
    if scope is not None:
        where.add("a.tenant_id = {}", scope.tenant_id)
        where.add("a.rule = ANY({}::text[])", list(scope.rules))
    where.add("a.status = ANY({}::text[])", STATUSES[flt.status])
    if flt.severity:
        where.add("a.severity = {}", flt.severity)
    if flt.machine_id:
        where.add("a.machine_id = {}", flt.machine_id)
    if flt.rule:
        where.add("a.rule = {}", flt.rule)
    total = await db.fetchval(_COUNT.format(where=where.sql), *where.args)
    query = _PAGE.format(where=where.sql, limit=where.param(limit), offset=where.param(offset))
    return await db.fetch(query, *where.args), total


_RULE_MEMORY = """
(SELECT DISTINCT ON (machine_id) machine_id, rule, status, details FROM alerts
 WHERE rule = 'gpu_ecc' AND status = 'resolved'
 ORDER BY machine_id, last_seen_at DESC)
UNION ALL
SELECT machine_id, rule, status, details FROM alerts WHERE status <> 'resolved'
"""


async def rule_memory(db: Executor) -> list[dict[str, Any]]:
    """What the frame rules must remember across restarts: every open alert, and the
    last resolved ECC alert of each machine (the error counts already reported)."""
    return [dict(row) for row in await db.fetch(_RULE_MEMORY)]
