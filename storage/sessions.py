"""Refresh tokens, grouped by login session (``session_id``); only SHA-256 hashes are kept."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import asyncpg

from storage.db import Executor


@dataclass(frozen=True, slots=True)
class RefreshToken:
    id: int
    session_id: UUID
    user_id: int
    expired: bool
    used: bool
    revoked: bool


_INSERT = """
INSERT INTO refresh_tokens (session_id, user_id, token_hash, expires_at)
VALUES ($1, $2, $3, now() + make_interval(secs => $4))
"""
_LOCK_BY_HASH = """
SELECT id, session_id, user_id, expires_at <= now() AS expired,
       used_at IS NOT NULL AS used, revoked_at IS NOT NULL AS revoked
FROM refresh_tokens WHERE token_hash = $1
FOR UPDATE
"""
_MARK_USED = "UPDATE refresh_tokens SET used_at = now() WHERE id = $1"
_REVOKE_SESSION = """
UPDATE refresh_tokens SET revoked_at = now(), revoke_reason = $2
WHERE session_id = $1 AND revoked_at IS NULL
"""
_REVOKE_USER_SESSION = """
UPDATE refresh_tokens SET revoked_at = now(), revoke_reason = $3
WHERE session_id = $1 AND user_id = $2 AND revoked_at IS NULL
"""
_REVOKE_USERS = """
UPDATE refresh_tokens SET revoked_at = now(), revoke_reason = $2
WHERE user_id = ANY($1::bigint[]) AND revoked_at IS NULL
"""
_REVOKE_USER_EXCEPT = """
UPDATE refresh_tokens SET revoked_at = now(), revoke_reason = $3
WHERE user_id = $1 AND session_id <> $2 AND revoked_at IS NULL
"""
_RECENT_SESSIONS = """
SELECT DISTINCT session_id FROM refresh_tokens
WHERE user_id = ANY($1::bigint[]) AND created_at > now() - make_interval(secs => $2)
"""
_SESSION_OF_HASH = "SELECT session_id FROM refresh_tokens WHERE token_hash = $1 AND user_id = $2"
_REVOKED_WITHIN = """
SELECT DISTINCT session_id FROM refresh_tokens
WHERE revoked_at > now() - make_interval(secs => $1)
"""
# Every revocation revokes all of a session's rows; any revoked row marks the session (a
# row inserted by a refresh racing the revocation must not bring it back).
_ACCESS_STATE = """
SELECT u.status <> 'active' OR t.status <> 'active' AS disabled,
       EXISTS (SELECT 1 FROM refresh_tokens r
               WHERE r.session_id = $1 AND r.revoked_at IS NOT NULL) AS revoked
FROM users u JOIN tenants t ON t.id = u.tenant_id
WHERE u.id = $2
"""


async def insert(db: Executor, *, session_id: UUID, user_id: int, token_hash: bytes,
                 ttl_s: int) -> None:
    await db.execute(_INSERT, session_id, user_id, token_hash, float(ttl_s))


async def lock_by_hash(conn: asyncpg.Connection, token_hash: bytes) -> RefreshToken | None:
    """The token row, locked until the caller's transaction ends (serialises rotations)."""
    row = await conn.fetchrow(_LOCK_BY_HASH, token_hash)
    return RefreshToken(**dict(row)) if row is not None else None


async def mark_used(db: Executor, token_id: int) -> None:
    await db.execute(_MARK_USED, token_id)


async def revoke_session(db: Executor, session_id: UUID, reason: str) -> None:
    await db.execute(_REVOKE_SESSION, session_id, reason)


async def revoke_session_of_user(db: Executor, session_id: UUID, user_id: int,
                                 reason: str) -> None:
    await db.execute(_REVOKE_USER_SESSION, session_id, user_id, reason)


async def revoke_users(db: Executor, user_ids: list[int], reason: str) -> None:
    await db.execute(_REVOKE_USERS, user_ids, reason)


async def revoke_user_except(db: Executor, user_id: int, keep: UUID, reason: str) -> None:
    """Revoke every login of the user but ``keep``."""
    await db.execute(_REVOKE_USER_EXCEPT, user_id, keep, reason)


async def session_of_hash(db: Executor, token_hash: bytes, user_id: int) -> UUID | None:
    return await db.fetchval(_SESSION_OF_HASH, token_hash, user_id)


async def recent_sessions(db: Executor, user_ids: list[int], within_s: int) -> list[UUID]:
    """Logins of these users that issued a token in the last ``within_s`` seconds: those
    that may still hold a live access token."""
    return [row["session_id"]
            for row in await db.fetch(_RECENT_SESSIONS, user_ids, float(within_s))]


async def revoked_within(db: Executor, within_s: int) -> list[UUID]:
    """Logins revoked in the last ``within_s`` seconds: those whose access tokens may still
    be unexpired."""
    return [row["session_id"] for row in await db.fetch(_REVOKED_WITHIN, float(within_s))]


async def access_state(db: Executor, session_id: UUID, user_id: int) -> asyncpg.Record | None:
    """``(disabled, revoked)``: whether the user or its tenant is disabled, and whether the
    login was revoked; None if the user no longer exists."""
    return await db.fetchrow(_ACCESS_STATE, session_id, user_id)
