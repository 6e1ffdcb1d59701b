"""Fixed-window failure counters in Redis (login throttling)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import redis.asyncio as redis


class FailureCounter:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    async def retry_after(self, limits: Sequence[tuple[str, int]]) -> int | None:
        """Seconds until the first exhausted counter resets, or None if none is exhausted.

        ``limits`` pairs a counter key with the number of failures it allows.
        """
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, _ in limits:
                pipe.get(key)
                pipe.pttl(key)
            replies = await pipe.execute()
        waits = []
        for i, (_, allowed) in enumerate(limits):
            count, ttl_ms = replies[2 * i], replies[2 * i + 1]
            if count is not None and int(count) >= allowed:
                waits.append(max(1, math.ceil(ttl_ms / 1000)) if ttl_ms > 0 else 1)
        return max(waits) if waits else None

    async def record(self, keys: Sequence[str], window_s: int) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                # SET NX starts the window; INCR keeps the TTL (EXPIRE NX needs Redis 7).
                pipe.set(key, 0, ex=window_s, nx=True)
                pipe.incr(key)
            await pipe.execute()

    async def reset(self, key: str) -> None:
        await self._redis.delete(key)
