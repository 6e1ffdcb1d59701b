"""Periodic jobs run by exactly one hub process at a time.

Each job has a Redis lock with a TTL. Every tick the process that holds it renews it and
runs the job; the others only try to take it, which succeeds once the holder has released
it (clean shutdown) or died (the TTL ran out).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import suppress

import redis.asyncio as redis

from services.cancel import finish_within

log = logging.getLogger(__name__)

# Renew our own lock, or take a free one; 1 when we hold it afterwards.
_ACQUIRE_OR_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class LeaderLock:
    def __init__(self, client: redis.Redis, key: str, ttl_s: float) -> None:
        self._redis = client
        self.key = key
        self.ttl_s = ttl_s
        self._ttl_ms = int(ttl_s * 1000)
        self.owner = uuid.uuid4().hex

    async def acquire_or_renew(self) -> bool:
        return bool(await self._redis.eval(_ACQUIRE_OR_RENEW, 1, self.key, self.owner,
                                           self._ttl_ms))

    async def release(self) -> None:
        await self._redis.eval(_RELEASE, 1, self.key, self.owner)


class Periodic:
    """Runs ``job`` every ``interval_s``: with a ``lock``, only while this process holds
    it (one process of the deployment); without, in every process."""

    def __init__(self, name: str, interval_s: float, job: Callable[[], Awaitable[object]],
                 lock: LeaderLock | None = None) -> None:
        self.name = name
        self._interval = interval_s
        self._job = job
        self._lock = lock
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.runs = 0
        self.failures = 0
        self._held_until = 0.0  # monotonic time until which our lock is known to be held

    @property
    def leading(self) -> bool:
        """True while this process holds the job's lock (always without a lock)."""
        return self._lock is None or time.monotonic() < self._held_until

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"periodic-{self.name}")

    async def stop(self, timeout_s: float = 5.0) -> None:
        # A flag, not only cancel(): on Python 3.11 asyncio.wait_for (used inside the
        # drivers) can swallow a cancellation, which would leave the loop running.
        self._stopping.set()
        if self._task is not None:
            await finish_within(self._task, timeout_s)
        if self._lock is not None:
            with suppress(Exception):
                await self._lock.release()

    async def _loop(self) -> None:
        try:
            await self._hold()  # know at once whether we lead, run the job on the next tick
        except Exception:
            log.warning("periodic job lock not taken", exc_info=True, extra={"job": self.name})
        while not self._stopping.is_set():
            with suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return
            try:
                if await self._hold():
                    await self._job()
                    self.runs += 1
            except Exception:
                self.failures += 1
                log.exception("periodic job failed", extra={"job": self.name})


    async def _hold(self) -> bool:
        if self._lock is None:
            return True
        asked = time.monotonic()
        held = await self._lock.acquire_or_renew()
        self._held_until = asked + self._lock.ttl_s if held else 0.0
        return held


def lock_ttl(interval_s: float) -> float:
    """Long enough to survive a slow tick, short enough for a quick takeover."""
    return max(3 * interval_s, 5.0)
