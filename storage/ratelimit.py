"""The login throttle in Redis: every attempt is counted, atomically, before its password
is checked, so concurrent guesses cannot slip past the limit.

Per username and per client IP, a counter of attempts lives for a window from the first
one. When a username's count reaches its limit the username is locked: for
``lockout_s`` the first time, twice as long each further time, never longer than the
window. After a lock-out one failure locks it again, until a window passes without one
(the count and the streak then lapse). An IP at its limit is refused until its window
ends. A successful login clears its username's count, lock and streak, and gives its
attempt back to its IP (the IP limit counts failures, not logins, and never resets: an
attacker who owns one account cannot launder its guesses with its own logins).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis.asyncio as redis

from storage.cache import Keys

# KEYS: the username's count, the IP's count, the username's lock, its lock-out streak.
# ARGV: username limit, IP limit, window ms, first lock-out ms.
# Returns 0 when the attempt was counted (go on and check the password), else the ms to
# wait, without counting it.
_ATTEMPT = """
local window = tonumber(ARGV[3])
local wait = redis.call('PTTL', KEYS[3])
if tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[2]) then
    wait = math.max(wait, redis.call('PTTL', KEYS[2]))
end
if wait > 0 then
    return wait
end
if redis.call('INCR', KEYS[2]) == 1 then
    redis.call('PEXPIRE', KEYS[2], window)
end
local count = redis.call('INCR', KEYS[1])
if count == 1 then
    redis.call('PEXPIRE', KEYS[1], window)
end
if count >= tonumber(ARGV[1]) then
    local streak = redis.call('INCR', KEYS[4])
    local lock = math.min(window, tonumber(ARGV[4]) * 2 ^ (streak - 1))
    redis.call('SET', KEYS[3], streak, 'PX', math.floor(lock))
    redis.call('SET', KEYS[1], count - 1, 'PX', math.floor(lock + window))
    redis.call('PEXPIRE', KEYS[4], math.floor(lock + window))
end
return 0
"""

# KEYS as above. The IP's count only goes down if it is still there (never below zero).
_SUCCEEDED = """
redis.call('DEL', KEYS[1], KEYS[3], KEYS[4])
if tonumber(redis.call('GET', KEYS[2]) or '0') > 0 then
    redis.call('DECR', KEYS[2])
end
"""


@dataclass(frozen=True, slots=True)
class Limits:
    per_username: int
    per_ip: int
    window_s: int
    lockout_s: int


class LoginThrottle:
    def __init__(self, client: redis.Redis, keys: Keys, limits: Limits) -> None:
        self._keys = keys
        self._limits = limits
        self._attempt = client.register_script(_ATTEMPT)
        self._succeeded = client.register_script(_SUCCEEDED)

    async def attempt(self, username: str, ip: str) -> int | None:
        """Count a login attempt. None: go on; else the seconds to wait (not counted)."""
        limits = self._limits
        wait_ms = await self._attempt(
            keys=self._key_names(username, ip),
            args=[limits.per_username, limits.per_ip, limits.window_s * 1000,
                  limits.lockout_s * 1000])
        return max(1, math.ceil(wait_ms / 1000)) if wait_ms else None

    async def succeeded(self, username: str, ip: str) -> None:
        await self._succeeded(keys=self._key_names(username, ip))

    def _key_names(self, username: str, ip: str) -> list[str]:
        return [self._keys.login_failures_user(username), self._keys.login_failures_ip(ip),
                self._keys.login_lock(username), self._keys.login_lockouts(username)]
