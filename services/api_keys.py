"""API keys (CONTRACT.md §3a): created, listed and revoked by their user, and accepted
wherever an access token is (services/auth.py asks ``lookup`` for a key's grant).

A request with a key costs no database query in steady state: a key's row is kept in
memory for ``CACHE_TTL_S``, and what must act at once does not depend on that copy. Every
request still checks the Redis revocation markers in the one MGET access tokens use (the
key's own marker under its id ``key-N``, its user's and its tenant's), so a revoked key or
a disabled account stops at once on every process; revoking also publishes
``access_revoked``, on which each process drops its copy and closes the dashboards
authenticated with the key. ``last_used_at`` is kept to the minute in memory and written
in batches (``LastUse``).

Keys cannot manage keys: creating and revoking one needs a login, so a leaked key can
neither mint more keys nor outlive its own revocation through a successor.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from services.errors import (
    ErrorCode,
    Forbidden,
    NotFound,
    ServiceError,
    Unauthenticated,
    ValidationFailed,
)
from services.events import ACCESS_REVOKED, EventSink
from services.ids import API_KEY, format_id
from services.tokens import new_api_key, token_hash
from storage import api_keys
from storage.api_keys import KeyOwner
from storage.revocations import Revocations

if TYPE_CHECKING:
    from services.auth import Principal

# How long a key's row is trusted in memory: bounds how late a role change is seen when
# no event announces it (revocations and disabled accounts act at once, through Redis).
CACHE_TTL_S = 30.0
CACHE_MAX = 10_000
# A revoked key's Redis marker must outlive every cached copy of its row; the rebuild
# after Redis lost its data restores the markers of keys revoked this recently.
REVOKED_MARKER_S = 600
# last_used_at is kept to the minute (CONTRACT.md §3a): one write per key and minute at most.
LAST_USED_FLUSH_S = 60.0
# "rgk_" and 8 random characters: enough to tell one's keys apart, useless to an attacker.
SHOWN_PREFIX_CHARS = 12
_NO_KEY_MANAGEMENT = "API keys are managed with a login, not with an API key"


@dataclass(frozen=True, slots=True)
class KeyGrant:
    """A key as authentication sees it: its owner, what it grants, whether it still may."""

    id: int
    user_id: int
    username: str
    tenant_id: int
    role: str
    permissions: frozenset[str]
    expires_at: float  # epoch seconds
    revoked: bool

    @property
    def sid(self) -> str:
        """What revocation markers and dashboard sockets know the key by (``key-N``)."""
        return format_id(API_KEY, self.id)

    @classmethod
    def of(cls, owner: KeyOwner) -> KeyGrant:
        return cls(id=owner.id, user_id=owner.user_id, username=owner.username,
                   tenant_id=owner.tenant_id, role=owner.role,
                   permissions=frozenset(owner.permissions),
                   expires_at=owner.expires_at.timestamp(), revoked=owner.revoked)


class KeyCache:
    """Key rows by the key's hash, each trusted for ``ttl_s``; the oldest entry makes room
    when ``max_entries`` are held. Unknown keys are not cached: a stream of made-up keys
    would push the real ones out."""

    def __init__(self, ttl_s: float, max_entries: int) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        self._entries: dict[bytes, tuple[float, KeyGrant]] = {}

    def get(self, key_hash: bytes) -> KeyGrant | None:
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        if time.monotonic() - entry[0] > self._ttl_s:
            del self._entries[key_hash]
            return None
        return entry[1]

    def put(self, key_hash: bytes, grant: KeyGrant) -> None:
        self._entries.pop(key_hash, None)
        if len(self._entries) >= self._max:
            del self._entries[next(iter(self._entries))]
        self._entries[key_hash] = (time.monotonic(), grant)

    def drop(self, matches: Callable[[KeyGrant], bool]) -> None:
        for key_hash in [h for h, (_, grant) in self._entries.items() if matches(grant)]:
            del self._entries[key_hash]


class LastUse:
    """Each key's last use to the minute, held in memory and written in batches: at most
    one write per key and minute, however many requests the key makes."""

    def __init__(self) -> None:
        self._pending: dict[int, int] = {}  # key id -> minute (epoch // 60) not yet written
        self._written: dict[int, int] = {}  # key id -> the last minute this process wrote
        self.writes = 0  # key rows written, for /metrics and tests

    def note(self, key_id: int, now: float) -> None:
        minute = int(now // 60)
        if self._written.get(key_id) != minute:
            self._pending[key_id] = minute

    def seen(self, key_id: int) -> datetime | None:
        """The latest use this process knows of, written or not."""
        minute = self._pending.get(key_id, self._written.get(key_id))
        return None if minute is None else datetime.fromtimestamp(minute * 60, UTC)

    async def flush(self, pool: asyncpg.Pool) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        try:
            await api_keys.touch(pool, {key_id: datetime.fromtimestamp(minute * 60, UTC)
                                        for key_id, minute in batch.items()})
        except BaseException:
            # Kept for the next flush, unless a newer use was noted meanwhile.
            for key_id, minute in batch.items():
                self._pending.setdefault(key_id, minute)
            raise
        self._written.update(batch)
        self.writes += len(batch)


class ApiKeyService:
    def __init__(self, pool: asyncpg.Pool, revocations: Revocations,
                 events: EventSink) -> None:
        self._pool = pool
        self._revocations = revocations
        self._events = events
        self._cache = KeyCache(CACHE_TTL_S, CACHE_MAX)
        # One read per key however many of its requests arrive together (a load test's
        # first burst would otherwise read the row once per request).
        self._reading: dict[bytes, asyncio.Task[KeyGrant | None]] = {}
        self.last_use = LastUse()
        self.lookups = 0  # key rows read from PostgreSQL to authenticate (cache misses)

    async def create(self, principal: Principal, *, name: str, expires_in_days: int,
                     permissions: list[str] | None) -> tuple[asyncpg.Record, str]:
        """The new key's row and the key itself, which is never shown again."""
        if principal.api_key_id is not None:
            raise Forbidden(_NO_KEY_MANAGEMENT)
        granted = _granted(principal.permissions, permissions)
        key = new_api_key()
        row = await api_keys.insert(self._pool, user_id=principal.user_id, name=name,
                                    prefix=key[:SHOWN_PREFIX_CHARS], key_hash=token_hash(key),
                                    permissions=granted, expires_in_days=expires_in_days)
        return row, key

    async def of_user(self, user_id: int) -> list[dict[str, Any]]:
        """The user's keys, ``last_used_at`` including uses this process has not written."""
        keys = []
        for row in await api_keys.of_user(self._pool, user_id):
            item = dict(row)
            seen = self.last_use.seen(row["id"])
            if seen is not None and (item["last_used_at"] is None or item["last_used_at"] < seen):
                item["last_used_at"] = seen
            keys.append(item)
        return keys

    async def revoke(self, principal: Principal, key_id: int) -> None:
        """Stops the key at once on every process (PostgreSQL first: it outlives Redis)."""
        if principal.api_key_id is not None:
            raise Forbidden(_NO_KEY_MANAGEMENT)
        if not await api_keys.revoke(self._pool, key_id, principal.user_id):
            raise NotFound("API key not found")
        sid = format_id(API_KEY, key_id)
        await self._revocations.revoke([sid], REVOKED_MARKER_S)
        self._events.publish(ACCESS_REVOKED, {"sids": [sid]})

    async def lookup(self, key: str) -> KeyGrant:
        """The key's grant, if it is known, not revoked and not expired. The caller still
        checks the revocation markers and intersects the permissions with the role's."""
        key_hash = token_hash(key)
        grant = self._cache.get(key_hash) or await self._read_once(key_hash)
        if grant is None:
            raise Unauthenticated("invalid API key")
        if grant.revoked:
            raise Unauthenticated("API key revoked")
        if grant.expires_at <= time.time():
            raise ServiceError("API key expired", code=ErrorCode.TOKEN_EXPIRED)
        return grant

    async def _read_once(self, key_hash: bytes) -> KeyGrant | None:
        task = self._reading.get(key_hash)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._read(key_hash))
            self._reading[key_hash] = task
            task.add_done_callback(lambda done: self._read_done(key_hash, done))
        # Shielded: one caller going away must not fail the others waiting for the row.
        return await asyncio.shield(task)

    def _read_done(self, key_hash: bytes, task: asyncio.Task[KeyGrant | None]) -> None:
        del self._reading[key_hash]
        if not task.cancelled():
            task.exception()  # its waiters raise it; none left must not log it as lost

    async def _read(self, key_hash: bytes) -> KeyGrant | None:
        owner = await api_keys.by_hash(self._pool, key_hash)
        self.lookups += 1
        if owner is None:
            return None
        grant = KeyGrant.of(owner)
        self._cache.put(key_hash, grant)
        return grant

    def note_use(self, key_id: int) -> None:
        self.last_use.note(key_id, time.time())

    async def flush_last_use(self) -> None:
        await self.last_use.flush(self._pool)

    def on_access_revoked(self, data: dict[str, Any]) -> None:
        """Forget the cached rows an ``access_revoked`` event concerns: revoked keys, and
        every key of a user or tenant named (disabled, or a role changed)."""
        sids = set(data.get("sids") or ())
        user_id, tenant_id = data.get("user_id"), data.get("tenant_id")
        self._cache.drop(lambda grant: grant.sid in sids or grant.user_id == user_id
                         or grant.tenant_id == tenant_id)


def _granted(held: frozenset[str], asked: list[str] | None) -> list[str]:
    """The permissions a new key gets: those asked for (all of the caller's by default),
    each of which the caller must hold."""
    if asked is None:
        return sorted(held)
    errors = [{"field": f"permissions[{i}]", "message": f"you do not hold {permission}"}
              for i, permission in enumerate(asked) if permission not in held]
    if errors:
        raise ValidationFailed(errors)
    return sorted(set(asked))
