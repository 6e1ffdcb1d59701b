"""Customers: a tenant and its first user, created together; disabling locks them out."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.errors import Duplicate, NotFound, field_error
from services.events import ACCESS_REVOKED, EventSink
from services.passwords import PasswordHasher
from storage import sessions, tenants, users
from storage.errors import DuplicateError
from storage.revocations import Revocations


class CustomerService:
    def __init__(self, pool: asyncpg.Pool, hasher: PasswordHasher, revocations: Revocations,
                 access_ttl_s: int, events: EventSink, *, default_quota_bytes: int) -> None:
        self._pool = pool
        self._default_quota_bytes = default_quota_bytes
        self._events = events
        self._hasher = hasher
        self._revocations = revocations
        self._access_ttl_s = access_ttl_s

    async def create(self, *, name: str, contact_name: str | None, contact_email: str | None,
                     username: str, password: str) -> tuple[asyncpg.Record, int]:
        """The new tenant's row and its first user's id."""
        password_hash = await self._hasher.hash(password)
        async with self._pool.acquire() as conn, conn.transaction():
            try:
                tenant = await tenants.insert(conn, name=name, contact_name=contact_name,
                                              contact_email=contact_email)
            except DuplicateError:
                raise Duplicate("a customer with this name exists",
                                data={"field": "name"}) from None
            try:
                user_id = await users.insert(conn, tenant_id=tenant["id"], username=username,
                                             password_hash=password_hash, role="customer")
            except DuplicateError:
                raise Duplicate("this username is taken", data={"field": "username"}) from None
        return tenant, user_id

    async def page(self, *, keyword: str | None, status: str | None, limit: int,
                   offset: int) -> tuple[list[asyncpg.Record], int]:
        return await tenants.page(self._pool, keyword=keyword, status=status, limit=limit,
                                  offset=offset)

    async def get(self, tenant_id: int) -> asyncpg.Record:
        row = await tenants.get(self._pool, tenant_id)
        if row is None:
            raise NotFound("customer not found")
        return row

    async def detail(self, tenant_id: int) -> dict[str, Any]:
        """The list item plus the tenant's users and its storage quota and use."""
        async with self._pool.acquire() as conn:
            row = await tenants.get(conn, tenant_id)
            if row is None:
                raise NotFound("customer not found")
            quota = await tenants.quota(conn, tenant_id)
            members = await users.items_of_tenant(conn, tenant_id)
            return {**dict(row), "users": [dict(member) for member in members],
                    "storage_quota_bytes": self._default_quota_bytes if quota is None
                    else quota,
                    "storage_used_bytes": await tenants.storage_used(conn, tenant_id)}

    async def update(self, tenant_id: int, changes: dict[str, Any]) -> None:
        """Change the given fields only; a ``storage_quota_bytes`` of None means the hub's
        default from then on."""
        if "name" in changes and changes["name"] is None:
            raise field_error("name", "must not be null")
        async with self._pool.acquire() as conn, conn.transaction():
            current = await tenants.lock(conn, tenant_id)
            if current is None:
                raise NotFound("customer not found")
            try:
                await tenants.update(conn, tenant_id, **{**dict(current), **changes})
            except DuplicateError:
                raise Duplicate("a customer with this name exists",
                                data={"field": "name"}) from None

    async def set_enabled(self, tenant_id: int, enabled: bool) -> None:
        """Enable or disable; disabling ends every login of the tenant's users for good
        (enabling again does not bring them back: the users log in anew)."""
        live: list[str] = []
        async with self._pool.acquire() as conn, conn.transaction():
            if not await tenants.set_status(conn, tenant_id,
                                            "active" if enabled else "disabled"):
                raise NotFound("customer not found")
            if not enabled:
                user_ids = await tenants.user_ids(conn, tenant_id)
                live = [str(sid) for sid in
                        await sessions.recent_sessions(conn, user_ids, self._access_ttl_s)]
                await sessions.revoke_users(conn, user_ids, "tenant disabled")
        # After the commit. The marker answers 40302 from the next request on; the revoked
        # sessions keep old access tokens dead once the tenant is enabled again.
        await self._revocations.revoke(live, self._access_ttl_s)
        await self._revocations.set_tenant_disabled(tenant_id, not enabled)
        if not enabled:
            self._events.publish(ACCESS_REVOKED, {"tenant_id": tenant_id})
