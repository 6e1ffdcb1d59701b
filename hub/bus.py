"""Events and telemetry between hub processes, over Redis pub/sub.

Two channels for the whole deployment (not one per machine): ``events`` (machine_status,
alert, job_update, job_queued, ...) and ``telemetry`` (batches of latest samples, published
only while another hub process listens). A
publisher hands its message to local subscribers at once and queues it for Redis; other
processes receive it from Redis. Messages carry the origin process id, so a process never
applies its own message twice. If Redis goes away the hub keeps serving what it has,
reconnects with backoff and logs it; messages published meanwhile are dropped (and
counted) once the bounded queue is full.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import orjson
import redis.asyncio as redis

from storage.cache import UNAVAILABLE_ERRORS, Keys

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], None]
TELEMETRY = "telemetry"
QUEUE_MAX = 10_000
PEER_CHECK_S = 2.0
_BACKOFF_MAX_S = 10.0


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC)


class Bus:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._redis = client
        self._events_channel = keys.channel("events")
        self._telemetry_channel = keys.channel(TELEMETRY)
        self.origin = uuid.uuid4().hex[:12]
        # Every message starts with its origin, so our own echoes are skipped undecoded.
        self._own_prefix = b'{"o":"' + self.origin.encode() + b'"'
        self._handlers: dict[str, list[Handler]] = {}
        self._outbox: deque[tuple[str, bytes]] = deque()
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._listening = False
        # Other hub processes listening for telemetry; while there are none, telemetry is
        # not published at all (it would only come back to us).
        self.peers = 0
        self.dropped = 0
        self.reconnects = 0
        self.received = 0

    def subscribe(self, kind: str, handler: Handler) -> None:
        """Call ``handler(data)`` for every ``kind`` message, local or remote. ``TELEMETRY``
        handlers get each remote sample batch (local samples are applied by the ingest)."""
        self._handlers.setdefault(kind, []).append(handler)

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        """An event for every process: delivered here now, to the others through Redis."""
        self._deliver(kind, data)
        self._enqueue(self._events_channel, dumps({"o": self.origin, "k": kind, "d": data}))

    def publish_telemetry(self, samples: list[bytes]) -> None:
        """Samples already encoded as JSON (the same bytes written to Redis)."""
        if not self.peers:
            return
        self._enqueue(self._telemetry_channel,
                      self._own_prefix + b',"s":[' + b",".join(samples) + b"]}")

    def _enqueue(self, channel: str, message: bytes) -> None:
        if len(self._outbox) >= QUEUE_MAX:
            self._outbox.popleft()
            self.dropped += 1
        self._outbox.append((channel, message))
        self._wakeup.set()

    def _deliver(self, kind: str, data: dict[str, Any]) -> None:
        for handler in self._handlers.get(kind, ()):
            try:
                handler(data)
            except Exception:
                log.exception("event handler failed", extra={"kind": kind})

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._send_loop(), name="bus-send"),
                       asyncio.create_task(self._listen_loop(), name="bus-listen"),
                       asyncio.create_task(self._count_peers(), name="bus-peers")]

    async def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with suppress(asyncio.CancelledError):
                await task

    async def _send_loop(self) -> None:
        delay = 0.1
        while not self._stopping:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._outbox and not self._stopping:
                batch = [self._outbox[i] for i in range(min(500, len(self._outbox)))]
                try:
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for channel, message in batch:
                            pipe.publish(channel, message)
                        await pipe.execute()
                except UNAVAILABLE_ERRORS:
                    log.warning("redis unavailable; events wait", extra={
                        "queued": len(self._outbox)})
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _BACKOFF_MAX_S)
                    continue
                for _ in batch:
                    self._outbox.popleft()
                delay = 0.1

    async def _count_peers(self) -> None:
        while not self._stopping:
            try:
                [(_, listeners)] = await self._redis.pubsub_numsub(self._telemetry_channel)
                self.peers = max(0, listeners - (1 if self._listening else 0))
            except UNAVAILABLE_ERRORS:
                pass  # keep the last count; the listener logs the outage
            await asyncio.sleep(PEER_CHECK_S)

    async def _listen_loop(self) -> None:
        delay = 0.1
        while not self._stopping:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._events_channel, self._telemetry_channel)
                self._listening = True
                if delay > 0.1:
                    log.info("redis pub/sub reconnected")
                delay = 0.1
                while not self._stopping:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._on_message(message["channel"], message["data"])
            except UNAVAILABLE_ERRORS:
                self.reconnects += 1
                log.warning("redis pub/sub lost; reconnecting", extra={"retry_in_s": delay})
                await asyncio.sleep(delay * (0.5 + random.random() / 2))
                delay = min(delay * 2, _BACKOFF_MAX_S)
            finally:
                self._listening = False
                with suppress(Exception):
                    await pubsub.aclose()

    def _on_message(self, channel: bytes, payload: bytes) -> None:
        if payload.startswith(self._own_prefix):
            return
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        self.received += 1
        if channel.decode() == self._telemetry_channel:
            self._deliver(TELEMETRY, {"samples": message.get("s", [])})
        else:
            self._deliver(message.get("k", ""), message.get("d") or {})
