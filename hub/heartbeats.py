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
from contextlib import suppress

import redis.asyncio as redis

from hub.bus import Bus, dumps
from hub.state import Sample
from storage.cache import UNAVAILABLE_ERRORS, Keys

log = logging.getLogger(__name__)

_BACKOFF_MAX_S = 5.0

# One command for the whole batch: building thousands of SET/ZADD/HSET commands in Python
# cost more than everything else on the ingest path. ARGV: ttl, heartbeat key prefix,
# then (machine id, receive time, latest sample JSON) per machine.
_WRITE = """
local ttl = ARGV[1]
local prefix = ARGV[2]
for i = 3, #ARGV, 3 do
    redis.call('SET', prefix .. ARGV[i], ARGV[i + 1], 'EX', ttl)
    redis.call('ZADD', KEYS[1], ARGV[i + 1], ARGV[i])
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
end
return #ARGV
"""


class HeartbeatSink:
    def __init__(self, client: redis.Redis, keys: Keys, bus: Bus, *, flush_s: float,
                 heartbeat_ttl_s: int) -> None:
        self._redis = client
        self._keys = keys
        self._bus = bus
        self._flush_s = flush_s
        self._ttl_s = heartbeat_ttl_s
        self._pending: dict[str, Sample] = {}
        self._script = client.register_script(_WRITE)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.failures = 0

    def add(self, sample: Sample) -> None:
        self._pending[sample.machine_id] = sample

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
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        try:
            await self._write(list(batch.values()))
        except BaseException:
            # keep them, unless a newer sample of the same machine arrived meanwhile
            for machine_id, sample in batch.items():
                self._pending.setdefault(machine_id, sample)
            raise

    async def _write(self, samples: list[Sample]) -> None:
        encoded = [dumps(sample.as_dict()) for sample in samples]
        args: list[object] = [self._ttl_s, self._keys.heartbeat("")]
        for sample, payload in zip(samples, encoded, strict=True):
            args += (sample.machine_id, repr(sample.received), payload)
        await self._script(keys=[self._keys.last_seen(), self._keys.latest()], args=args)
        self._bus.publish_telemetry(encoded)

    async def _run(self) -> None:
        delay = self._flush_s
        while not self._stopping.is_set():
            with suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
            try:
                await self.flush()
                delay = self._flush_s
            except Exception:
                self.failures += 1
                delay = min(max(delay * 2, 0.5), _BACKOFF_MAX_S)
                log.warning("heartbeats not written to redis; retrying", exc_info=True,
                            extra={"pending": len(self._pending), "retry_in_s": delay})
