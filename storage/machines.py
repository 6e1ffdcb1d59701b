"""Machines and their GPU devices."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from storage.db import Executor, Where, escape_like
from storage.errors import DuplicateError

# The columns of a machine as the API shows it, with its tenant and open lease.
_ITEM = """
SELECT m.id, m.name, m.region, m.status, m.allocation_status, host(m.ip) AS ip,
       m.gpu_model, m.gpu_count, m.gpu_memory_gb, m.cpu_info, m.memory_total, m.disk_total,
       m.ssh_host, m.ssh_port, m.ssh_user, m.jupyter_url, m.labels, m.maintenance_reason,
       m.tenant_id, t.name AS tenant_name, a.id AS allocation_id, a.expires_at,
       m.last_heartbeat_at, m.created_at, m.updated_at
FROM machines m
LEFT JOIN tenants t ON t.id = m.tenant_id
LEFT JOIN allocations a ON a.machine_id = m.id AND a.status <> 'reclaimed'
"""
_GET = _ITEM + " WHERE m.id = $1"
_PAGE = _ITEM + "{where} ORDER BY m.id LIMIT {limit} OFFSET {offset}"
_COUNT = "SELECT count(*) FROM machines m{where}"

_INSERT = """
INSERT INTO machines (id, name, region, ip, gpu_model, gpu_count, gpu_memory_gb, cpu_info,
                      memory_total, disk_total, ssh_host, ssh_port, ssh_user, jupyter_url,
                      labels, agent_token_hash)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::inet[], $5::text[], $6::int[],
                     $7::int[], $8::text[], $9::int[], $10::int[], $11::text[], $12::int[],
                     $13::text[], $14::text[], $15::jsonb[], $16::bytea[])
"""
_INSERT_GPUS = """
INSERT INTO gpu_devices (machine_id, gpu_index, model, memory_total_mib)
SELECT m.id, g.i, m.gpu_model, m.gpu_memory_gb * 1024
FROM machines m, generate_series(0, m.gpu_count - 1) AS g(i)
WHERE m.id = ANY($1::text[])
"""
_GPUS = """
SELECT gpu_index AS index, uuid, model, memory_total_mib FROM gpu_devices
WHERE machine_id = $1 ORDER BY gpu_index
"""
_RESIZE_GPUS_DROP = "DELETE FROM gpu_devices WHERE machine_id = $1 AND gpu_index >= $2"
_RESIZE_GPUS_ADD = """
INSERT INTO gpu_devices (machine_id, gpu_index, model, memory_total_mib)
SELECT id, g.i, gpu_model, gpu_memory_gb * 1024
FROM machines, generate_series(0, gpu_count - 1) AS g(i)
WHERE id = $1
ON CONFLICT (machine_id, gpu_index) DO NOTHING
"""
_EXISTING_IDS = "SELECT id FROM machines WHERE id = ANY($1::text[])"
_DELETE_IDLE = "DELETE FROM machines WHERE id = $1 AND allocation_status = 'idle' RETURNING id"
_ALLOCATION_STATUS = "SELECT allocation_status FROM machines WHERE id = $1"
_ENTER_MAINTENANCE = """
UPDATE machines SET allocation_status = 'maintenance', maintenance_reason = $2,
       version = version + 1, updated_at = now()
WHERE id = $1 AND allocation_status = 'idle'
RETURNING id
"""
_LEAVE_MAINTENANCE = """
UPDATE machines SET allocation_status = 'idle', maintenance_reason = NULL,
       version = version + 1, updated_at = now()
WHERE id = $1 AND allocation_status = 'maintenance'
  AND NOT EXISTS (SELECT 1 FROM allocations WHERE machine_id = $1 AND status <> 'reclaimed')
RETURNING id
"""
_SET_TOKEN = """
UPDATE machines SET agent_token_hash = $2, updated_at = now() WHERE id = $1 RETURNING id
"""
_LOCK_MANY = """
SELECT id, name, allocation_status FROM machines WHERE id = ANY($1::text[]) ORDER BY id
FOR UPDATE
"""
_MARK_ALLOCATED = """
UPDATE machines SET allocation_status = 'allocated', tenant_id = $2, version = version + 1,
       updated_at = now()
WHERE id = ANY($1::text[]) AND allocation_status = 'idle'
RETURNING id
"""
_MARK_RECLAIMING = """
UPDATE machines SET allocation_status = 'maintenance', maintenance_reason = $2,
       version = version + 1, updated_at = now()
WHERE id = $1 AND allocation_status = 'allocated'
RETURNING id
"""
_RELEASE = """
UPDATE machines SET allocation_status = 'idle', tenant_id = NULL, maintenance_reason = NULL,
       version = version + 1, updated_at = now()
WHERE id = $1
"""
_OF_TENANT = """
SELECT m.id, m.name, m.status, m.allocation_status, m.gpu_model, m.gpu_count, m.ssh_host,
       m.ssh_port, m.ssh_user, m.jupyter_url, m.last_heartbeat_at, a.id AS allocation_id,
       a.status AS allocation_state, a.start_time AS lease_start, a.expires_at
FROM machines m
JOIN allocations a ON a.machine_id = m.id AND a.status <> 'reclaimed' AND a.tenant_id = $1
WHERE m.tenant_id = $1
"""
_TENANT_PAGE = _OF_TENANT + " ORDER BY m.id"
_TENANT_ONE = _OF_TENANT + " AND m.id = $2"

_STATES = """
SELECT id, status, allocation_status, tenant_id, version FROM machines
WHERE id = ANY($1::text[]) ORDER BY id
"""

# Columns an admin may change with PATCH; values arrive already validated.
PATCHABLE = (
    "name", "region", "ip", "gpu_model", "gpu_count", "gpu_memory_gb", "cpu_info",
    "memory_total", "disk_total", "ssh_host", "ssh_port", "ssh_user", "jupyter_url", "labels",
)


@dataclass(frozen=True)
class MachineFilter:
    gpu_model: str | None = None
    status: str | None = None
    allocation_status: str | None = None
    region: str | None = None
    tenant_id: int | None = None
    keyword: str | None = None


@dataclass(frozen=True)
class NewMachine:
    id: str
    name: str
    region: str
    ip: str
    gpu_model: str
    gpu_count: int
    gpu_memory_gb: int
    cpu_info: str
    memory_total: int
    disk_total: int
    ssh_host: str
    ssh_port: int
    ssh_user: str
    jupyter_url: str | None
    labels: dict[str, Any]
    agent_token_hash: bytes


async def insert_many(conn: asyncpg.Connection, machines: list[NewMachine]) -> None:
    """Insert machines and one gpu_devices row per GPU, in the caller's transaction."""
    columns = [[getattr(m, field) for m in machines] for field in NewMachine.__dataclass_fields__]
    try:
        await conn.execute(_INSERT, *columns)
    except asyncpg.UniqueViolationError as exc:
        raise DuplicateError(exc.constraint_name or "machines") from None
    await conn.execute(_INSERT_GPUS, [m.id for m in machines])


async def existing_ids(db: Executor, ids: list[str]) -> set[str]:
    return {row["id"] for row in await db.fetch(_EXISTING_IDS, ids)}


async def get(db: Executor, machine_id: str) -> asyncpg.Record | None:
    return await db.fetchrow(_GET, machine_id)


async def gpus(db: Executor, machine_id: str) -> list[asyncpg.Record]:
    return await db.fetch(_GPUS, machine_id)


async def page(db: Executor, flt: MachineFilter, *, limit: int,
               offset: int) -> tuple[list[asyncpg.Record], int]:
    where = Where()
    if flt.gpu_model:
        where.add("m.gpu_model ILIKE {}", "%" + escape_like(flt.gpu_model) + "%")
    if flt.status:
        where.add("m.status = {}", flt.status)
    if flt.allocation_status:
        where.add("m.allocation_status = {}", flt.allocation_status)
    if flt.region:
        where.add("m.region = {}", flt.region)
    if flt.tenant_id is not None:
        where.add("m.tenant_id = {}", flt.tenant_id)
    if flt.keyword:
        # the same expression as machines_keyword_trgm_idx, so the index serves it
        where.add("(m.id || ' ' || m.name || ' ' || host(m.ip)) ILIKE {}",
                  "%" + escape_like(flt.keyword) + "%")
    total = await db.fetchval(_COUNT.format(where=where.sql), *where.args)
    query = _PAGE.format(where=where.sql, limit=where.param(limit), offset=where.param(offset))
    return await db.fetch(query, *where.args), total


async def update(conn: asyncpg.Connection, machine_id: str,
                 changes: Mapping[str, Any]) -> bool:
    """Apply PATCHABLE changes; resizes gpu_devices when gpu_count changes."""
    assignments = []
    args: list[Any] = [machine_id]
    for column in PATCHABLE:
        if column in changes:
            args.append(changes[column])
            assignments.append(f"{column} = ${len(args)}")
    assignments.append("updated_at = now()")
    updated = await conn.fetchval(
        f"UPDATE machines SET {', '.join(assignments)} WHERE id = $1 RETURNING gpu_count", *args
    )
    if updated is None:
        return False
    if "gpu_count" in changes:
        await conn.execute(_RESIZE_GPUS_DROP, machine_id, updated)
        await conn.execute(_RESIZE_GPUS_ADD, machine_id)
    return True


async def delete_idle(db: Executor, machine_id: str) -> bool:
    return await db.fetchval(_DELETE_IDLE, machine_id) is not None


async def allocation_status(db: Executor, machine_id: str) -> str | None:
    return await db.fetchval(_ALLOCATION_STATUS, machine_id)


async def enter_maintenance(db: Executor, machine_id: str, reason: str | None) -> bool:
    return await db.fetchval(_ENTER_MAINTENANCE, machine_id, reason) is not None


async def leave_maintenance(db: Executor, machine_id: str) -> bool:
    return await db.fetchval(_LEAVE_MAINTENANCE, machine_id) is not None


async def set_agent_token(db: Executor, machine_id: str, token_hash: bytes) -> bool:
    return await db.fetchval(_SET_TOKEN, machine_id, token_hash) is not None


async def lock_many(conn: asyncpg.Connection, ids: list[str]) -> list[asyncpg.Record]:
    """Lock the machines in id order (concurrent batches never deadlock)."""
    return await conn.fetch(_LOCK_MANY, ids)


async def mark_allocated(conn: asyncpg.Connection, ids: list[str], tenant_id: int) -> set[str]:
    """The conditional update that makes allocation atomic: only idle machines change."""
    return {row["id"] for row in await conn.fetch(_MARK_ALLOCATED, ids, tenant_id)}


async def mark_reclaiming(conn: asyncpg.Connection, machine_id: str, reason: str) -> bool:
    return await conn.fetchval(_MARK_RECLAIMING, machine_id, reason) is not None


async def release(conn: asyncpg.Connection, machine_id: str) -> None:
    """Back to idle with no tenant (the lease is over)."""
    await conn.execute(_RELEASE, machine_id)


async def of_tenant(db: Executor, tenant_id: int) -> list[asyncpg.Record]:
    return await db.fetch(_TENANT_PAGE, tenant_id)


async def one_of_tenant(db: Executor, tenant_id: int, machine_id: str) -> asyncpg.Record | None:
    return await db.fetchrow(_TENANT_ONE, tenant_id, machine_id)


async def states(db: Executor, ids: list[str]) -> list[asyncpg.Record]:
    """Liveness, lease state and tenant of these machines (for machine_status events)."""
    return await db.fetch(_STATES, ids)


_IDENTITY = "SELECT id, gpu_count FROM machines WHERE agent_token_hash = $1"
_ALL_STATES = "SELECT id, status, allocation_status, tenant_id, version FROM machines"
# Status changes bump `version` like lease changes do: machine_status events carry it, so
# a process applying them out of order keeps the newest.
_MARK_ONLINE = """
UPDATE machines SET status = 'online', version = version + 1,
       last_heartbeat_at = greatest(last_heartbeat_at, $2)
WHERE id = ANY($1::text[]) AND status = 'offline'
RETURNING id, status, allocation_status, tenant_id, version
"""
_MARK_SILENT_OFFLINE = """
UPDATE machines SET status = 'offline', version = version + 1
WHERE status = 'online' AND (last_heartbeat_at IS NULL OR last_heartbeat_at < $1)
RETURNING id, status, allocation_status, tenant_id, version
"""
_MARK_HEARD_ONLINE = """
UPDATE machines SET status = 'online', version = version + 1
WHERE status = 'offline' AND last_heartbeat_at >= $1
RETURNING id, status, allocation_status, tenant_id, version
"""
_TOUCH_HEARTBEATS = """
UPDATE machines m SET last_heartbeat_at = v.seen
FROM unnest($1::text[], $2::timestamptz[]) AS v(id, seen)
WHERE m.id = v.id AND (m.last_heartbeat_at IS NULL OR m.last_heartbeat_at < v.seen)
"""
_REFINE_GPU = """
INSERT INTO gpu_devices (machine_id, gpu_index, uuid, model, memory_total_mib, updated_at)
SELECT $1, g.i, g.uuid, g.model, g.mem, now()
FROM unnest($2::int[], $3::text[], $4::text[], $5::int[]) AS g(i, uuid, model, mem)
ON CONFLICT (machine_id, gpu_index) DO UPDATE
SET uuid = EXCLUDED.uuid, model = EXCLUDED.model, memory_total_mib = EXCLUDED.memory_total_mib,
    updated_at = now()
"""


async def identity(db: Executor, token_hash: bytes) -> asyncpg.Record | None:
    """The machine an agent token speaks for (id, gpu_count)."""
    return await db.fetchrow(_IDENTITY, token_hash)


async def all_states(db: Executor) -> list[asyncpg.Record]:
    return await db.fetch(_ALL_STATES)


async def mark_online(db: Executor, ids: list[str], heard_at: Any) -> list[asyncpg.Record]:
    """offline -> online, heard from at ``heard_at``; returns the machines that changed
    (not those another process brought online first)."""
    return await db.fetch(_MARK_ONLINE, ids, heard_at)


async def mark_silent_offline(db: Executor, heard_before: Any) -> list[asyncpg.Record]:
    """online -> offline for machines whose last recorded heartbeat is older than
    ``heard_before`` (or missing); returns them."""
    return await db.fetch(_MARK_SILENT_OFFLINE, heard_before)


async def mark_heard_online(db: Executor, heard_since: Any) -> list[asyncpg.Record]:
    """offline -> online for machines heard from since ``heard_since``; returns them."""
    return await db.fetch(_MARK_HEARD_ONLINE, heard_since)


async def touch_heartbeats(db: Executor, ids: list[str], seen: list[Any]) -> None:
    await db.execute(_TOUCH_HEARTBEATS, ids, seen)


async def refine_gpus(db: Executor, machine_id: str, gpus: list[tuple[int, str, str, int]]
                      ) -> None:
    """What the agent reports about each GPU (index, uuid, model, MiB) replaces the
    registration's guess."""
    await db.execute(_REFINE_GPU, machine_id, [g[0] for g in gpus], [g[1] for g in gpus],
                     [g[2] for g in gpus], [g[3] for g in gpus])
