"""Redis records that make access tokens die before they expire.

An access token is checked against three markers in one MGET: its login session (logout,
refresh-token reuse, revoked for good when its tenant is disabled), its user and its
tenant (disabled). PostgreSQL is the source of truth for all of them; the markers are a
copy, trusted only while ``Keys.revocations_ready`` (read in the same MGET) says they
were rebuilt from PostgreSQL since Redis last lost its data.

A rebuild is safe against Redis losing its data again meanwhile: it reads the data epoch
(``Keys.data_epoch``, written when missing) before reading PostgreSQL, and marks the copy
ready only if the epoch is still the same (one script). Every revocation writes its marker
after its PostgreSQL commit, so a revocation the rebuild's read missed wrote its marker
after the epoch was read, and that marker is still there unless the epoch changed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import redis.asyncio as redis

from storage.cache import Keys

DISABLED = "disabled"
REVOKED = "revoked"
# The markers cannot be trusted (Redis lost its data and they are not rebuilt yet).
UNKNOWN = "unknown"

# KEYS[1] the data epoch, KEYS[2] the ready marker; ARGV[1] the epoch the rebuild read,
# ARGV[2] the marker's value.
_MARK_READY = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return 0
end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""


class Revocations:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._redis = client
        self._keys = keys
        self._mark_ready = client.register_script(_MARK_READY)

    async def state(self, *, sid: str, user_id: int, tenant_id: int) -> str | None:
        """``DISABLED`` if the user or tenant is disabled, ``REVOKED`` if the session was
        revoked, ``UNKNOWN`` if the markers are not to be trusted now, else None."""
        session, user, tenant, ready = await self._redis.mget(
            self._keys.revoked_session(sid),
            self._keys.disabled_user(user_id),
            self._keys.disabled_tenant(tenant_id),
            self._keys.revocations_ready(),
        )
        if ready is None:
            return UNKNOWN
        if user is not None or tenant is not None:
            return DISABLED
        if session is not None:
            return REVOKED
        return None

    async def revoke(self, sids: Iterable[str], ttl_s: int) -> None:
        """Mark login sessions revoked for ``ttl_s`` (the access-token lifetime: no token
        of theirs outlives it)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for sid in sids:
                pipe.set(self._keys.revoked_session(sid), REVOKED, ex=ttl_s)
            await pipe.execute()

    async def set_user_disabled(self, user_id: int, disabled: bool) -> None:
        await self._set_marker(self._keys.disabled_user(user_id), disabled)

    async def set_tenant_disabled(self, tenant_id: int, disabled: bool) -> None:
        await self._set_marker(self._keys.disabled_tenant(tenant_id), disabled)

    async def epoch(self) -> bytes:
        """The data epoch, written now if Redis has none: a rebuild starts by reading it."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._keys.data_epoch(), repr(time.time()), nx=True)
            pipe.get(self._keys.data_epoch())
            _, epoch = await pipe.execute()
        return epoch

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

    async def mark_ready(self, epoch: bytes) -> bool:
        """Trust the markers from now on, if Redis kept its data since ``epoch`` was read
        (else False: it lost them again, and they need another rebuild)."""
        return bool(await self._mark_ready(
            keys=[self._keys.data_epoch(), self._keys.revocations_ready()],
            args=[epoch, repr(time.time())]))

    async def _set_marker(self, key: str, disabled: bool) -> None:
        if disabled:
            await self._redis.set(key, DISABLED)
        else:
            await self._redis.delete(key)
