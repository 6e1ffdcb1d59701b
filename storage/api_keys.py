"""API keys: SHA-256 hashes only, with their owner's identity for authentication."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from storage.db import Executor


@dataclass(frozen=True, slots=True)
class KeyOwner:
    """What authenticating with a key needs: the key's grant and its user as they are now."""

    id: int
    user_id: int
    username: str
    tenant_id: int
    role: str
    permissions: list[str]
    expires_at: datetime
    revoked: bool


_ITEM = "id, name, prefix, permissions, created_at, expires_at, last_used_at"
_INSERT = f"""
INSERT INTO api_keys (user_id, name, prefix, key_hash, permissions, expires_at)
VALUES ($1, $2, $3, $4, $5, now() + make_interval(days => $6))
RETURNING {_ITEM}
"""
_OF_USER = f"""
SELECT {_ITEM} FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL
ORDER BY created_at DESC, id DESC
"""
_REVOKE = """
UPDATE api_keys SET revoked_at = now()
WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL
RETURNING id
"""
_BY_HASH = """
SELECT k.id, k.user_id, u.username, u.tenant_id, u.role, k.permissions, k.expires_at,
       k.revoked_at IS NOT NULL AS revoked
FROM api_keys k JOIN users u ON u.id = k.user_id
WHERE k.key_hash = $1
"""
_ACCESS_STATE = """
SELECT u.status <> 'active' OR t.status <> 'active' AS disabled,
       k.revoked_at IS NOT NULL AS revoked
FROM api_keys k JOIN users u ON u.id = k.user_id JOIN tenants t ON t.id = u.tenant_id
WHERE k.id = $1
"""
_REVOKED_WITHIN = "SELECT id FROM api_keys WHERE revoked_at > now() - make_interval(secs => $1)"
# Several processes flush their own minutes: never move a key's last use backwards.
_TOUCH = """
UPDATE api_keys k SET last_used_at = used.at
FROM unnest($1::bigint[], $2::timestamptz[]) AS used (id, at)
WHERE k.id = used.id AND (k.last_used_at IS NULL OR k.last_used_at < used.at)
"""


async def insert(db: Executor, *, user_id: int, name: str, prefix: str, key_hash: bytes,
                 permissions: list[str], expires_in_days: int) -> asyncpg.Record:
    return await db.fetchrow(_INSERT, user_id, name, prefix, key_hash, permissions,
                             expires_in_days)


async def of_user(db: Executor, user_id: int) -> list[asyncpg.Record]:
    """The user's keys not revoked (expired ones included), newest first."""
    return await db.fetch(_OF_USER, user_id)


async def revoke(db: Executor, key_id: int, user_id: int) -> bool:
    """False if the user has no such key (or it was revoked already)."""
    return await db.fetchval(_REVOKE, key_id, user_id) is not None


async def by_hash(db: Executor, key_hash: bytes) -> KeyOwner | None:
    row = await db.fetchrow(_BY_HASH, key_hash)
    return KeyOwner(**dict(row)) if row is not None else None


async def access_state(db: Executor, key_id: int) -> asyncpg.Record | None:
    """``(disabled, revoked)``: whether the key's user or tenant is disabled, and whether
    the key was revoked; None if the key no longer exists."""
    return await db.fetchrow(_ACCESS_STATE, key_id)


async def revoked_within(db: Executor, within_s: float) -> list[int]:
    return [row["id"] for row in await db.fetch(_REVOKED_WITHIN, float(within_s))]


async def touch(db: Executor, used: dict[int, datetime]) -> None:
    """Record each key's last use (one statement for the whole batch)."""
    await db.execute(_TOUCH, list(used), list(used.values()))
