"""Users managed by admins (CONTRACT.md §3a), and every user's own password.

Whatever ends a user's access (disabling it, a new role, a new password) revokes its
logins in PostgreSQL first and, after the commit, writes the Redis markers and announces
``ACCESS_REVOKED``: every hub process then refuses the old access tokens and closes the
user's dashboards at once (services/revocations.py, hub/dashboards.py).
"""

from __future__ import annotations

import uuid

import asyncpg

from services.auth import Principal
from services.errors import (
    Conflict,
    Duplicate,
    ErrorCode,
    Forbidden,
    NotFound,
    RateLimited,
    ServiceError,
    field_error,
)
from services.events import ACCESS_REVOKED, EventSink
from services.passwords import PasswordHasher
from storage import sessions, tenants, users
from storage.errors import DuplicateError
from storage.ratelimit import LoginThrottle
from storage.revocations import Revocations

PLATFORM_TENANT_ID = 0
CUSTOMER = "customer"


class UserService:
    def __init__(self, pool: asyncpg.Pool, hasher: PasswordHasher, revocations: Revocations,
                 throttle: LoginThrottle, access_ttl_s: int, events: EventSink) -> None:
        self._pool = pool
        self._hasher = hasher
        self._revocations = revocations
        self._throttle = throttle
        self._access_ttl_s = access_ttl_s
        self._events = events

    async def page(self, *, role: str | None, tenant_id: int | None, status: str | None,
                   keyword: str | None, limit: int, offset: int
                   ) -> tuple[list[asyncpg.Record], int]:
        return await users.page(self._pool, role=role, tenant_id=tenant_id, status=status,
                                keyword=keyword, limit=limit, offset=offset)

    async def get(self, user_id: int) -> asyncpg.Record:
        row = await users.item(self._pool, user_id)
        if row is None:
            raise NotFound("user not found")
        return row

    async def create(self, *, username: str, password: str, role: str,
                     tenant_id: int | None) -> asyncpg.Record:
        tenant_id = _tenant_of(role, tenant_id)
        password_hash = await self._hasher.hash(password)
        async with self._pool.acquire() as conn, conn.transaction():
            if role == CUSTOMER:
                await _check_tenant(conn, tenant_id)
            try:
                user_id = await users.insert(conn, tenant_id=tenant_id, username=username,
                                             password_hash=password_hash, role=role)
            except DuplicateError:
                raise Duplicate("this username is taken", data={"field": "username"}) from None
            return await users.item(conn, user_id)

    async def set_role(self, user_id: int, role: str) -> asyncpg.Record:
        """A new role ends the user's logins: its access tokens carry the old one."""
        ended: list[str] | None = None
        async with self._pool.acquire() as conn, conn.transaction():
            admins = await users.lock_enabled_admins(conn)
            user = await _lock(conn, user_id)
            if role != user.role:
                if (role == CUSTOMER) != (user.role == CUSTOMER):
                    raise Conflict("a customer cannot become staff, nor staff a customer",
                                   data={"role": user.role})
                _keep_an_admin(admins, user_id, "lose the admin role")
                await users.set_role(conn, user_id, role)
                ended = await self._end_logins(conn, user_id, "role changed")
            item = await users.item(conn, user_id)
        if ended is not None:
            await self._announce(ended, user_id)
        return item

    async def set_enabled(self, actor_id: int, user_id: int, enabled: bool) -> asyncpg.Record:
        ended: list[str] | None = None
        async with self._pool.acquire() as conn, conn.transaction():
            admins = await users.lock_enabled_admins(conn)
            await _lock(conn, user_id)
            if not enabled:
                if user_id == actor_id:
                    raise Conflict("you cannot disable yourself")
                _keep_an_admin(admins, user_id, "be disabled")
                ended = await self._end_logins(conn, user_id, "user disabled")
            await users.set_status(conn, user_id, "active" if enabled else "disabled")
            item = await users.item(conn, user_id)
        # After the commit, as for a tenant: the marker answers 40302 from the next request
        # on, and the revoked logins stay dead once the user is enabled again.
        await self._revocations.set_user_disabled(user_id, not enabled)
        if ended is not None:
            await self._announce(ended, user_id)
        return item

    async def reset_password(self, user_id: int, password: str) -> None:
        password_hash = await self._hasher.hash(password)
        async with self._pool.acquire() as conn, conn.transaction():
            await _lock(conn, user_id)
            await users.set_password_by_id(conn, user_id, password_hash)
            ended = await self._end_logins(conn, user_id, "password reset")
        # Logins only: the user's API keys were not given with the password.
        await self._announce(ended)

    async def change_own_password(self, principal: Principal, *, current: str, new: str,
                                  client_ip: str) -> None:
        """Ends every other login of the user; the calling one goes on. Wrong guesses
        count against the login throttle, so a stolen token cannot try passwords freely."""
        if principal.api_key_id is not None:
            # A script's key must not be able to take the account over.
            raise Forbidden("an API key cannot change the password; log in instead")
        user_id, username = principal.user_id, principal.username
        retry_after = await self._throttle.attempt(username, client_ip)
        if retry_after is not None:
            raise RateLimited(retry_after)
        user = await users.by_id(self._pool, user_id)
        if user is None or not await self._hasher.verify(user.password_hash, current):
            raise ServiceError(code=ErrorCode.BAD_CREDENTIALS)
        await self._throttle.succeeded(username, client_ip)
        password_hash = await self._hasher.hash(new)
        keep = uuid.UUID(principal.sid)
        async with self._pool.acquire() as conn, conn.transaction():
            await users.set_password_by_id(conn, user_id, password_hash)
            ended = [str(s) for s in await sessions.recent_sessions(
                conn, [user_id], self._access_ttl_s) if s != keep]
            await sessions.revoke_user_except(conn, user_id, keep, "password changed")
        await self._announce(ended)

    async def _end_logins(self, conn: asyncpg.Connection, user_id: int,
                          reason: str) -> list[str]:
        """Revoke every login of the user; those that may still hold a live access token."""
        live = await sessions.recent_sessions(conn, [user_id], self._access_ttl_s)
        await sessions.revoke_users(conn, [user_id], reason)
        return [str(sid) for sid in live]

    async def _announce(self, ended: list[str], user_id: int | None = None) -> None:
        """Kill the ended logins' access tokens and close their dashboards, on every
        process; with ``user_id``, every dashboard of the user and its cached API keys
        too (it was disabled, or its role changed)."""
        await self._revocations.revoke(ended, self._access_ttl_s)
        event: dict[str, object] = {"sids": ended}
        if user_id is not None:
            event["user_id"] = user_id
        self._events.publish(ACCESS_REVOKED, event)


def _tenant_of(role: str, tenant_id: int | None) -> int:
    """Staff belong to the platform (tenant 0); a customer names its tenant."""
    if role != CUSTOMER:
        if tenant_id not in (None, PLATFORM_TENANT_ID):
            raise field_error("tenant_id", "admins and operators belong to no customer")
        return PLATFORM_TENANT_ID
    if tenant_id is None or tenant_id == PLATFORM_TENANT_ID:
        raise field_error("tenant_id", "a customer user needs its customer's id")
    return tenant_id


async def _check_tenant(conn: asyncpg.Connection, tenant_id: int) -> None:
    status = await tenants.status_for_share(conn, tenant_id)
    if status is None:
        raise NotFound("customer not found")
    if status != "active":
        raise Conflict("customer is disabled", data={"tenant_id": tenant_id, "status": status})


async def _lock(conn: asyncpg.Connection, user_id: int) -> users.Locked:
    user = await users.lock(conn, user_id)
    if user is None:
        raise NotFound("user not found")
    return user


def _keep_an_admin(enabled_admins: list[int], user_id: int, change: str) -> None:
    if enabled_admins == [user_id]:
        raise Conflict(f"the last enabled admin cannot {change}")
