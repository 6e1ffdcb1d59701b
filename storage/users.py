"""Users, with their tenant's status (every authentication needs both)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from storage.db import Executor
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
