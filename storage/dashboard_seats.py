"""Dashboard sockets per user, counted across every hub process.

Each user has a sorted set of seats (one per open socket, ``{process}:{session}``) scored
by the time the seat lapses. A process renews the seats of its open sockets well before
that, so the seats of a process that died without closing its sockets lapse on their own
and are dropped the next time anyone counts.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import redis.asyncio as redis

from storage.cache import Keys

# KEYS[1] the user's seats; ARGV: now, lapse time, limit, seat, key ttl. 1 if taken.
_TAKE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
    return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


class DashboardSeats:
    def __init__(self, client: redis.Redis, keys: Keys, *, lapse_s: int) -> None:
        self._redis = client
        self._keys = keys
        self._lapse_s = lapse_s
        self._take = client.register_script(_TAKE)

    async def take(self, user_id: int, seat: str, limit: int) -> bool:
        """A seat for one more socket of the user, unless ``limit`` are taken."""
        now = time.time()
        return bool(await self._take(keys=[self._keys.dashboard_seats(user_id)],
                                     args=[now, now + self._lapse_s, limit, seat,
                                           self._lapse_s]))

    async def release(self, user_id: int, seat: str) -> None:
        await self._redis.zrem(self._keys.dashboard_seats(user_id), seat)

    async def renew(self, seats: Iterable[tuple[int, str]]) -> None:
        """Push back the lapse time of these seats (the open sockets of this process)."""
        lapse_at = time.time() + self._lapse_s
        async with self._redis.pipeline(transaction=False) as pipe:
            users = set()
            for user_id, seat in seats:
                # XX: a seat released meanwhile is not brought back.
                pipe.zadd(self._keys.dashboard_seats(user_id), {seat: lapse_at}, xx=True)
                users.add(user_id)
            for user_id in users:
                pipe.expire(self._keys.dashboard_seats(user_id), self._lapse_s)
            await pipe.execute()
