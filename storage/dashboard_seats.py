"""Dashboard sockets per user, counted across every hub process.

Each user has a hash of open sockets per process (``{process id: count}``); each process
keeps a liveness key that lapses ``lapse_s`` after its last renewal. Counting a user's
sockets skips (and deletes) the entries of processes whose key lapsed, so the sockets of
a process that died without closing them stop counting on their own. A process id is
stable across restarts (host and port), so a process started in place of a killed one
gives its predecessor's seats back at once. Renewal is one command per process, whatever
the number of sockets.
"""

from __future__ import annotations

import redis.asyncio as redis

from storage.cache import Keys

# KEYS[1] the user's hash. ARGV: limit, this process, liveness key prefix, lapse seconds.
# The liveness keys are named from ARGV: fine on one Redis server (not Redis Cluster).
_TAKE = """
redis.call('SET', ARGV[3] .. ARGV[2], 1, 'EX', ARGV[4])
local fields = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #fields, 2 do
    if redis.call('EXISTS', ARGV[3] .. fields[i]) == 0 then
        redis.call('HDEL', KEYS[1], fields[i])
    else
        total = total + tonumber(fields[i + 1])
    end
end
if total >= tonumber(ARGV[1]) then
    return 0
end
redis.call('HINCRBY', KEYS[1], ARGV[2], 1)
return 1
"""

# KEYS[1] the user's hash; ARGV[1] this process.
_RELEASE = """
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then
    redis.call('HDEL', KEYS[1], ARGV[1])
end
"""


class DashboardSeats:
    def __init__(self, client: redis.Redis, keys: Keys, *, process_id: str,
                 lapse_s: int) -> None:
        self._redis = client
        self._keys = keys
        self._process_id = process_id
        self._lapse_s = lapse_s
        self._take = client.register_script(_TAKE)
        self._release = client.register_script(_RELEASE)

    async def take(self, user_id: int, limit: int) -> bool:
        """A seat for one more socket of the user, unless ``limit`` are taken."""
        return bool(await self._take(keys=[self._keys.dashboard_seats(user_id)],
                                     args=[limit, self._process_id,
                                           self._keys.dashboard_process(), self._lapse_s]))

    async def release(self, user_id: int) -> None:
        await self._release(keys=[self._keys.dashboard_seats(user_id)],
                            args=[self._process_id])

    async def set_held(self, user_id: int, count: int) -> None:
        """Correct this process's count for the user (after a release that failed)."""
        key = self._keys.dashboard_seats(user_id)
        if count:
            await self._redis.hset(key, self._process_id, count)
        else:
            await self._redis.hdel(key, self._process_id)

    async def release_all(self) -> int:
        """Give back every seat this process id holds, for every user: at start, the seats
        of a predecessor with the same id (a process killed before it could release them),
        which would otherwise count until they lapse. Returns the users it held seats of."""
        freed = 0
        async for key in self._redis.scan_iter(match=self._keys.dashboard_seats("*"),
                                               count=1000):
            freed += await self._redis.hdel(key, self._process_id)
        return freed

    async def keep_alive(self) -> None:
        """This process is alive: its seats count for another ``lapse_s``."""
        await self._redis.set(self._keys.dashboard_process(self._process_id), 1,
                              ex=self._lapse_s)
