"""Periodic jobs run by exactly one hub process at a time.

Each job has a Redis lock with a TTL. Every tick the process that holds it renews it and
runs the job; the others only try to take it, which succeeds once the holder has released
it (clean shutdown) or died (the TTL ran out).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from contextlib import suppress

import redis.asyncio as redis

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
        self._ttl_ms = int(ttl_s * 1000)
        self.owner = uuid.uuid4().hex

    async def acquire_or_renew(self) -> bool:
        return bool(await self._redis.eval(_ACQUIRE_OR_RENEW, 1, self.key, self.owner,
                                           self._ttl_ms))

    async def release(self) -> None:
        await self._redis.eval(_RELEASE, 1, self.key, self.owner)


class Periodic:
    """Runs ``job`` every ``interval_s`` while this process holds the job's lock."""

    def __init__(self, name: str, interval_s: float, job: Callable[[], Awaitable[object]],
                 lock: LeaderLock) -> None:
        self.name = name
        self._interval = interval_s
        self._job = job
        self._lock = lock
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.runs = 0
        self.failures = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"periodic-{self.name}")

    async def stop(self, timeout_s: float = 5.0) -> None:
        # A flag, not only cancel(): on Python 3.11 asyncio.wait_for (used inside the
        # drivers) can swallow a cancellation, which would leave the loop running.
        self._stopping.set()
        if self._task is not None:
            try:
                async with asyncio.timeout(timeout_s):
                    await asyncio.shield(self._task)
            except TimeoutError:
                self._task.cancel()
                with suppress(asyncio.CancelledError):
                    await self._task
        with suppress(Exception):
            await self._lock.release()

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            with suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return
            try:
                if await self._lock.acquire_or_renew():
                    await self._job()
                    self.runs += 1
            except Exception:
                self.failures += 1
                log.exception("periodic job failed", extra={"job": self.name})


def lock_ttl(interval_s: float) -> float:
    """Long enough to survive a slow tick, short enough for a quick takeover."""
    return max(3 * interval_s, 5.0)
