"""Agent identity: an agent token (SHA-256 hashed at rest) speaks for one machine.

Every heartbeat is authenticated, so lookups are cached in memory for a minute; a
rotation evicts the machine's entry in every process at once (agent_token_rotated event).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import asyncpg

from services.errors import Unauthenticated
from services.tokens import token_hash
from storage import machines as machine_store

CACHE_TTL_S = 60.0
NEGATIVE_TTL_S = 10.0
CACHE_MAX = 200_000


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    machine_id: str
    gpu_count: int


class AgentAuth:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._cache: dict[bytes, tuple[AgentIdentity | None, float]] = {}

    async def identify(self, token: str) -> AgentIdentity:
        digest = token_hash(token)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            identity = cached[0]
        else:
            row = await machine_store.identity(self._pool, digest)
            identity = AgentIdentity(row["id"], row["gpu_count"]) if row else None
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()
            self._cache[digest] = (identity, now + (CACHE_TTL_S if identity else NEGATIVE_TTL_S))
        if identity is None:
            raise Unauthenticated("invalid agent token")
        return identity

    def forget(self, machine_id: str) -> None:
        stale = [k for k, (ident, _) in self._cache.items()
                 if ident is not None and ident.machine_id == machine_id]
        for key in stale:
            del self._cache[key]

    async def refine_gpus(self, machine_id: str, gpus: list[tuple[int, str, str, int]]) -> None:
        await machine_store.refine_gpus(self._pool, machine_id, gpus)
