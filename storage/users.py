"""Users, with their tenant's status (every authentication needs both)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from storage.db import Executor, Where, escape_like
from storage.errors import DuplicateError


@dataclass(frozen=True, slots=True)
class User:
    id: int
    tenant_id: int
    username: str
    password_hash: str
    role: str
    status: str
    tenant_status: str


_SELECT = """
SELECT u.id, u.tenant_id, u.username, u.password_hash, u.role, u.status,
       t.status AS tenant_status
FROM users u JOIN tenants t ON t.id = u.tenant_id
"""
_BY_USERNAME = _SELECT + " WHERE lower(u.username) = lower($1)"
_BY_ID = _SELECT + " WHERE u.id = $1"
_INSERT = """
INSERT INTO users (tenant_id, username, password_hash, role)
VALUES ($1, $2, $3, $4)
RETURNING id
"""
_SET_PASSWORD = """
UPDATE users SET password_hash = $2, updated_at = now()
WHERE lower(username) = lower($1)
RETURNING id
"""
_TOUCH_LOGIN = "UPDATE users SET last_login_at = now() WHERE id = $1"
_DISABLED_IDS = "SELECT id FROM users WHERE status = 'disabled'"
# The admin's view of a user; platform staff belong to no customer, hence no tenant name.
_ITEM = """
SELECT u.id, u.username, u.role, u.tenant_id,
       CASE WHEN u.tenant_id = 0 THEN NULL ELSE t.name END AS tenant_name,
       u.status, u.created_at, u.last_login_at
FROM users u JOIN tenants t ON t.id = u.tenant_id"""
_ITEM_BY_ID = _ITEM + " WHERE u.id = $1"
_ITEMS_OF_TENANT = _ITEM + " WHERE u.tenant_id = $1 ORDER BY u.created_at, u.id"
_PAGE = _ITEM + "{where} ORDER BY u.created_at DESC, u.id DESC LIMIT {limit} OFFSET {offset}"
_COUNT = "SELECT count(*) FROM users u{where}"
_LOCK = "SELECT id, tenant_id, role, status FROM users WHERE id = $1 FOR UPDATE"
# Every change that could leave no enabled admin locks all enabled admins first, in id
# order: two admins demoting or disabling each other at once are then serialised, and the
# second sees the first's change (a row no longer matching drops out of its lock set).
_LOCK_ENABLED_ADMINS = """
SELECT id FROM users WHERE role = 'admin' AND status = 'active' ORDER BY id FOR UPDATE
"""
_SET_ROLE = "UPDATE users SET role = $2, updated_at = now() WHERE id = $1"
_SET_STATUS = "UPDATE users SET status = $2, updated_at = now() WHERE id = $1"
_SET_PASSWORD_BY_ID = "UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1"


@dataclass(frozen=True, slots=True)
class Locked:
    """A user row locked for a change until the transaction ends."""

    id: int
    tenant_id: int
    role: str
    status: str


def _user(row: asyncpg.Record | None) -> User | None:
    return User(**dict(row)) if row is not None else None


async def by_username(db: Executor, username: str) -> User | None:
    return _user(await db.fetchrow(_BY_USERNAME, username))


async def by_id(db: Executor, user_id: int) -> User | None:
    return _user(await db.fetchrow(_BY_ID, user_id))


async def insert(db: Executor, *, tenant_id: int, username: str, password_hash: str,
                 role: str) -> int:
    try:
        return await db.fetchval(_INSERT, tenant_id, username, password_hash, role)
    except asyncpg.UniqueViolationError as exc:
        raise DuplicateError(exc.constraint_name or "users") from None


async def set_password(db: Executor, username: str, password_hash: str) -> int | None:
    return await db.fetchval(_SET_PASSWORD, username, password_hash)


async def touch_login(db: Executor, user_id: int) -> None:
    await db.execute(_TOUCH_LOGIN, user_id)


async def disabled_ids(db: Executor) -> list[int]:
    return [row["id"] for row in await db.fetch(_DISABLED_IDS)]


async def item(db: Executor, user_id: int) -> asyncpg.Record | None:
    return await db.fetchrow(_ITEM_BY_ID, user_id)


async def items_of_tenant(db: Executor, tenant_id: int) -> list[asyncpg.Record]:
    return await db.fetch(_ITEMS_OF_TENANT, tenant_id)


async def page(db: Executor, *, role: str | None, tenant_id: int | None, status: str | None,
               keyword: str | None, limit: int, offset: int
               ) -> tuple[list[asyncpg.Record], int]:
    where = Where()
    if role:
        where.add("u.role = {}", role)
    if tenant_id is not None:
        where.add("u.tenant_id = {}", tenant_id)
    if status:
        where.add("u.status = {}", status)
    if keyword:
        where.add("u.username ILIKE {}", "%" + escape_like(keyword) + "%")
    total = await db.fetchval(_COUNT.format(where=where.sql), *where.args)
    query = _PAGE.format(where=where.sql, limit=where.param(limit), offset=where.param(offset))
    return await db.fetch(query, *where.args), total


async def lock(conn: asyncpg.Connection, user_id: int) -> Locked | None:
    row = await conn.fetchrow(_LOCK, user_id)
    return Locked(**dict(row)) if row is not None else None


async def lock_enabled_admins(conn: asyncpg.Connection) -> list[int]:
    """Ids of the enabled admins, locked until the transaction ends."""
    return [row["id"] for row in await conn.fetch(_LOCK_ENABLED_ADMINS)]


async def set_role(db: Executor, user_id: int, role: str) -> None:
    await db.execute(_SET_ROLE, user_id, role)


async def set_status(db: Executor, user_id: int, status: str) -> None:
    await db.execute(_SET_STATUS, user_id, status)


async def set_password_by_id(db: Executor, user_id: int, password_hash: str) -> None:
    await db.execute(_SET_PASSWORD_BY_ID, user_id, password_hash)
