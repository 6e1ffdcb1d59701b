"""Is an access token's login (or an API key) revoked, or its user or tenant disabled?

Redis answers in one round trip while it holds the revocation markers. When it has lost
them (a restart without persistence, a flush) PostgreSQL answers instead, from the first
request that notices, and this process rebuilds the markers from PostgreSQL in the
background; every process notices on its own, and rebuilds running side by side write
the same markers. So there is no moment in which a revoked token is accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

import asyncpg

from services.api_keys import REVOKED_MARKER_S
from services.ids import API_KEY, format_id
from storage import api_keys, sessions, tenants, users
from storage.revocations import DISABLED, REVOKED, UNKNOWN, Revocations

log = logging.getLogger(__name__)


class RevocationCheck:
    def __init__(self, pool: asyncpg.Pool, revocations: Revocations, access_ttl_s: int) -> None:
        self._pool = pool
        self._revocations = revocations
        self._access_ttl_s = access_ttl_s
        self._rebuilding: asyncio.Task[None] | None = None

    async def state(self, *, sid: str, user_id: int, tenant_id: int,
                    api_key_id: int | None = None) -> str | None:
        """``DISABLED``, ``REVOKED`` or None (the token may be used). An API key passes its
        id, and ``key-N`` as ``sid``."""
        state = await self._revocations.state(sid=sid, user_id=user_id, tenant_id=tenant_id)
        if state != UNKNOWN:
            return state
        self._start_rebuild()
        return await self._state_in_database(sid, user_id, api_key_id)

    async def rebuild(self) -> bool:
        """Copy what PostgreSQL says is revoked or disabled into Redis, and trust Redis again.
        False if Redis lost its data once more meanwhile (the next request starts another)."""
        epoch = await self._revocations.epoch()
        stale = await self._revocations.disabled_markers()
        revoked = await sessions.revoked_within(self._pool, self._access_ttl_s)
        revoked_keys = await api_keys.revoked_within(self._pool, REVOKED_MARKER_S)
        await self._revocations.replace_disabled(stale, await users.disabled_ids(self._pool),
                                                 await tenants.disabled_ids(self._pool))
        await self._revocations.revoke([str(sid) for sid in revoked], self._access_ttl_s)
        await self._revocations.revoke([format_id(API_KEY, key_id) for key_id in revoked_keys],
                                       REVOKED_MARKER_S)
        return await self._revocations.mark_ready(epoch)

    async def close(self) -> None:
        if self._rebuilding is not None:
            self._rebuilding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rebuilding

    async def _state_in_database(self, sid: str, user_id: int,
                                 api_key_id: int | None) -> str | None:
        if api_key_id is not None:
            row = await api_keys.access_state(self._pool, api_key_id)
        else:
            row = await sessions.access_state(self._pool, uuid.UUID(sid), user_id)
        if row is None:  # the user (or the key) was deleted
            return REVOKED
        if row["disabled"]:
            return DISABLED
        return REVOKED if row["revoked"] else None

    def _start_rebuild(self) -> None:
        """One rebuild at a time in this process, however many requests notice the loss."""
        if self._rebuilding is None or self._rebuilding.done():
            self._rebuilding = asyncio.get_running_loop().create_task(self._rebuild_logged())

    async def _rebuild_logged(self) -> None:
        log.warning("Redis lost the revocation markers (restart or flush): PostgreSQL checks "
                    "tokens while they are rebuilt from it")
        try:
            rebuilt = await self.rebuild()
        except Exception:  # a background task: log it; the next request tries again
            log.exception("rebuilding the revocation markers failed")
            return
        if rebuilt:
            log.info("revocation markers rebuilt from PostgreSQL")
