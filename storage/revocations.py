"""Redis records that make access tokens die before they expire.

An access token is checked against four keys in one MGET: its own ``jti`` (logout), its
login session (refresh-token reuse, logout elsewhere), its user and its tenant (disabled).
The database stays the source of truth for user and tenant status; these markers are a
copy rebuilt at start-up (``replace_disabled``).
"""

from __future__ import annotations

from collections.abc import Iterable

import redis.asyncio as redis

from storage.cache import Keys

DISABLED = b"disabled"
REVOKED = b"revoked"


class Revocations:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._redis = client
        self._keys = keys

    async def state(self, *, jti: str, sid: str, user_id: int, tenant_id: int) -> bytes | None:
        """``DISABLED`` if the user or tenant is disabled, ``REVOKED`` if the token or its
        session was revoked, else None."""
        token, session, user, tenant = await self._redis.mget(
            self._keys.revoked_token(jti),
            self._keys.revoked_session(sid),
            self._keys.disabled_user(user_id),
            self._keys.disabled_tenant(tenant_id),
        )
        if user is not None or tenant is not None:
            return DISABLED
        if token is not None or session is not None:
            return REVOKED
        return None

    async def revoke(self, *, jti: str | None, sids: Iterable[str], ttl_s: int) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            if jti is not None:
                pipe.set(self._keys.revoked_token(jti), REVOKED, ex=ttl_s)
            for sid in sids:
                pipe.set(self._keys.revoked_session(sid), REVOKED, ex=ttl_s)
            await pipe.execute()

    async def set_user_disabled(self, user_id: int, disabled: bool) -> None:
        await self._set_marker(self._keys.disabled_user(user_id), disabled)

    async def set_tenant_disabled(self, tenant_id: int, disabled: bool) -> None:
        await self._set_marker(self._keys.disabled_tenant(tenant_id), disabled)

    async def disabled_markers(self) -> list[bytes]:
        return [key async for key in self._redis.scan_iter(match=self._keys.disabled_pattern())]

    async def replace_disabled(self, stale: list[bytes], user_ids: Iterable[int],
                               tenant_ids: Iterable[int]) -> None:
        """Drop the ``stale`` markers and mark exactly these users and tenants.

        Read ``stale`` (``disabled_markers``) *before* reading the database: a marker set
        in between by a concurrent disable is then either not in ``stale`` or also in the
        database's answer, so it survives.
        """
        async with self._redis.pipeline(transaction=True) as pipe:
            if stale:
                pipe.delete(*stale)
            for user_id in user_ids:
                pipe.set(self._keys.disabled_user(user_id), DISABLED)
            for tenant_id in tenant_ids:
                pipe.set(self._keys.disabled_tenant(tenant_id), DISABLED)
            await pipe.execute()

    async def _set_marker(self, key: str, disabled: bool) -> None:
        if disabled:
            await self._redis.set(key, DISABLED)
        else:
            await self._redis.delete(key)
