"""Tenants (customers); tenant 0 is the platform itself."""

from __future__ import annotations

import asyncpg

from storage.db import Executor, Where, escape_like
from storage.errors import DuplicateError

_DISABLED_IDS = "SELECT id FROM tenants WHERE status = 'disabled'"
_INSERT = """
INSERT INTO tenants (name, contact_name, contact_email) VALUES ($1, $2, $3)
RETURNING id, name, contact_name, contact_email, status, created_at
"""
_STATUS_FOR_SHARE = "SELECT status FROM tenants WHERE id = $1 AND id <> 0 FOR SHARE"
_SET_STATUS = """
UPDATE tenants SET status = $2, updated_at = now() WHERE id = $1 AND id <> 0 RETURNING id
"""
_USER_IDS = "SELECT id FROM users WHERE tenant_id = $1"
# machine_count: machines the tenant holds now (allocated, or being reclaimed from it).
_ITEM = """
SELECT t.id, t.name, t.contact_name, t.contact_email, t.status, t.created_at,
       (SELECT count(*) FROM machines m WHERE m.tenant_id = t.id) AS machine_count
FROM tenants t"""
_GET = _ITEM + " WHERE t.id = $1 AND t.id <> 0"
_LOCK = """
SELECT name, contact_name, contact_email, storage_quota_bytes FROM tenants
WHERE id = $1 AND id <> 0 FOR UPDATE
"""
_UPDATE = """
UPDATE tenants SET name = $2, contact_name = $3, contact_email = $4, storage_quota_bytes = $5,
                   updated_at = now()
WHERE id = $1
"""
_QUOTA = "SELECT storage_quota_bytes FROM tenants WHERE id = $1"
# What the tenant's datasets hold or are about to hold; failed uploads count for nothing.
_STORAGE_USED = """
SELECT coalesce(sum(size), 0)::bigint FROM datasets
WHERE tenant_id = $1 AND status IN ('uploading', 'processing', 'ready')
"""
_PAGE = _ITEM + "{where} ORDER BY t.created_at DESC, t.id DESC LIMIT {limit} OFFSET {offset}"
_COUNT = "SELECT count(*) FROM tenants t{where}"


async def disabled_ids(db: Executor) -> list[int]:
    return [row["id"] for row in await db.fetch(_DISABLED_IDS)]


async def insert(db: Executor, *, name: str, contact_name: str | None,
                 contact_email: str | None) -> asyncpg.Record:
    try:
        return await db.fetchrow(_INSERT, name, contact_name, contact_email)
    except asyncpg.UniqueViolationError as exc:
        raise DuplicateError(exc.constraint_name or "tenants") from None


async def status_for_share(conn: asyncpg.Connection, tenant_id: int) -> str | None:
    """The tenant's status, locked against a concurrent disable until the transaction ends."""
    return await conn.fetchval(_STATUS_FOR_SHARE, tenant_id)


async def set_status(db: Executor, tenant_id: int, status: str) -> bool:
    return await db.fetchval(_SET_STATUS, tenant_id, status) is not None


async def get(db: Executor, tenant_id: int) -> asyncpg.Record | None:
    return await db.fetchrow(_GET, tenant_id)


async def lock(conn: asyncpg.Connection, tenant_id: int) -> asyncpg.Record | None:
    """The tenant's editable fields, locked until the transaction ends; None for tenant 0."""
    return await conn.fetchrow(_LOCK, tenant_id)


async def update(db: Executor, tenant_id: int, *, name: str, contact_name: str | None,
                 contact_email: str | None, storage_quota_bytes: int | None) -> None:
    try:
        await db.execute(_UPDATE, tenant_id, name, contact_name, contact_email,
                         storage_quota_bytes)
    except asyncpg.UniqueViolationError as exc:
        raise DuplicateError(exc.constraint_name or "tenants") from None


async def quota(db: Executor, tenant_id: int) -> int | None:
    """The tenant's own quota, bytes; None when it uses the hub's default."""
    return await db.fetchval(_QUOTA, tenant_id)


async def storage_used(db: Executor, tenant_id: int) -> int:
    return await db.fetchval(_STORAGE_USED, tenant_id)


async def user_ids(db: Executor, tenant_id: int) -> list[int]:
    return [row["id"] for row in await db.fetch(_USER_IDS, tenant_id)]


async def page(db: Executor, *, keyword: str | None, status: str | None, limit: int,
               offset: int) -> tuple[list[asyncpg.Record], int]:
    where = Where()
    where.add("t.id <> {}", 0)
    if keyword:
        where.add("(t.name || ' ' || coalesce(t.contact_name, '') || ' ' || "
                  "coalesce(t.contact_email, '')) ILIKE {}", "%" + escape_like(keyword) + "%")
    if status:
        where.add("t.status = {}", status)
    total = await db.fetchval(_COUNT.format(where=where.sql), *where.args)
    query = _PAGE.format(where=where.sql, limit=where.param(limit), offset=where.param(offset))
    return await db.fetch(query, *where.args), total
