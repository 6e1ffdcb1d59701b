"""Heartbeats and latest samples to Redis, pipelined.

Frames arriving within ``flush_s`` are coalesced per machine (the newest wins) and written
in one pipeline: ``machine:heartbeat:{id}`` with the hub's receive time, the last-seen
sorted set the liveness monitor reads, the latest-sample hash the realtime endpoint reads,
and one telemetry message on the bus for the other hub processes. If Redis is down the
pending map is kept (it holds at most one sample per machine) and retried with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from contextlib import suppress

import redis.asyncio as redis

from hub.bus import Bus, dumps
from hub.state import Sample
from services.logs import Outage
from storage.cache import UNAVAILABLE_ERRORS, Keys

log = logging.getLogger(__name__)

_BACKOFF_MAX_S = 5.0

# One command for the whole batch: building thousands of SET/ZADD/HSET commands in Python
# cost more than everything else on the ingest path. ARGV: ttl, heartbeat key prefix, the
# number of samples, then (machine id, receive time, latest sample JSON) per sample, then
# (machine id, time) per machine heard from without a sample to keep.
_WRITE = """
local ttl = ARGV[1]
local prefix = ARGV[2]
local touched = 4 + 3 * tonumber(ARGV[3])
for i = 4, touched - 1, 3 do
    redis.call('SET', prefix .. ARGV[i], ARGV[i + 1], 'EX', ttl)
    redis.call('ZADD', KEYS[1], ARGV[i + 1], ARGV[i])
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
end
for i = touched, #ARGV, 2 do
    redis.call('SET', prefix .. ARGV[i], ARGV[i + 1], 'EX', ttl)
    redis.call('ZADD', KEYS[1], ARGV[i + 1], ARGV[i])
end
return #ARGV
"""
HELD_TOUCH_S = 1.0


class HeartbeatSink:
    def __init__(self, client: redis.Redis, keys: Keys, bus: Bus, *, flush_s: float,
                 heartbeat_ttl_s: int, held: Callable[[], Collection[str]] = frozenset) -> None:
        """``held``: machines whose frames the hub itself is holding back (flow control);
        they count as heard from, refreshed every ``HELD_TOUCH_S``."""
        self._redis = client
        self._keys = keys
        self._bus = bus
        self._flush_s = flush_s
        self._ttl_s = heartbeat_ttl_s
        self._pending: dict[str, Sample] = {}
        self._touched: dict[str, float] = {}
        self._held = held
        self._held_touched = 0.0
        self._script = client.register_script(_WRITE)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._outage = Outage(log, "heartbeat writes to Redis")
        self.failures = 0

    def add(self, sample: Sample) -> None:
        self._pending[sample.machine_id] = sample

    def touch(self, machine_id: str) -> None:
        """Heard from now, without a sample to keep (a frame the hub refused)."""
        self._touched[machine_id] = time.time()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="heartbeat-sink")

    async def close(self) -> None:
        self._stopping.set()
        if self._task is not None:
            with suppress(asyncio.CancelledError):
                await self._task
        with suppress(*UNAVAILABLE_ERRORS):
            await self.flush()

    async def flush(self) -> None:
        now = time.time()
        if now - self._held_touched >= HELD_TOUCH_S:
            self._held_touched = now
            for machine_id in self._held():
                self._touched[machine_id] = now
        if not self._pending and not self._touched:
            return
        batch, self._pending = self._pending, {}
        touched, self._touched = self._touched, {}
        try:
            await self._write(list(batch.values()),
                              [(m, t) for m, t in touched.items() if m not in batch])
        except BaseException:
            # keep them, unless newer ones of the same machine arrived meanwhile
            for machine_id, sample in batch.items():
                self._pending.setdefault(machine_id, sample)
            for machine_id, heard in touched.items():
                self._touched.setdefault(machine_id, heard)
            raise

    async def _write(self, samples: list[Sample], touched: list[tuple[str, float]]) -> None:
        encoded = [dumps(sample.as_dict()) for sample in samples]
        args: list[object] = [self._ttl_s, self._keys.heartbeat(""), len(samples)]
        for sample, payload in zip(samples, encoded, strict=True):
            args += (sample.machine_id, repr(sample.received), payload)
        for machine_id, heard in touched:
            args += (machine_id, repr(heard))
        await self._script(keys=[self._keys.last_seen(), self._keys.latest()], args=args)
        if encoded:
            self._bus.publish_telemetry(encoded)

    async def _run(self) -> None:
        delay = self._flush_s
        while not self._stopping.is_set():
            with suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
            try:
                await self.flush()
            except Exception as exc:
                self.failures += 1
                self._outage.failed(exc, pending=len(self._pending))
                delay = min(max(delay * 2, 0.5), _BACKOFF_MAX_S)
                continue
            delay = self._flush_s
            self._outage.recovered()
