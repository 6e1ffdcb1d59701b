"""Dashboard fan-out: topics of subscribers, frames encoded once, backpressure.

A message for a topic is encoded once and wrapped once in a WebSocket TEXT frame (server
frames are never masked, so the bytes are the same for everyone); those bytes are written
straight to each subscriber's transport, without a task, a coroutine or an encoding per
subscriber. Before each write the subscriber's transport buffer is checked:

- snapshots and updates are replaceable: above the high-water mark the subscriber misses
  them (it gets the next ones);
- events are not: they wait in a small bounded queue of the subscriber;
- a subscriber that stays above the mark longer than ``slow_close_s``, or whose event queue
  overflows, is closed with 4008 without waiting for its buffer to drain (then aborted).

So whatever a client does, what the hub holds for it is bounded by the mark, one frame and
the event queue.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

from hub.protocol import ABORT_AFTER_S, close_frame, text_frame

CLOSE_GOING_AWAY = 1001
CLOSE_UNAUTHENTICATED = 4001
CLOSE_TOO_SLOW = 4008

@dataclass(eq=False, slots=True)
class Subscriber:
    """One dashboard socket, as the fan-out sees it."""

    transport: asyncio.Transport
    topic: str
    role: str
    user_id: int
    tenant_id: int
    sid: str
    events: deque[bytes] = field(default_factory=deque)
    slow_since: float | None = None
    closed: bool = False


class Fanout:
    def __init__(self, *, high_water_bytes: int, slow_close_s: float, event_queue: int) -> None:
        self._high_water = high_water_bytes
        self._slow_close_s = slow_close_s
        self._event_queue = event_queue
        self.topics: dict[str, set[Subscriber]] = {}
        # Subscribers above the mark or with queued events: the only ones a sweep visits.
        self._troubled: set[Subscriber] = set()
        self.sent = 0
        self.skipped = 0
        self.slow_closes = 0

    def add(self, sub: Subscriber) -> None:
        self.topics.setdefault(sub.topic, set()).add(sub)

    def remove(self, sub: Subscriber) -> None:
        subs = self.topics.get(sub.topic)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self.topics[sub.topic]
        self._troubled.discard(sub)

    def has(self, topic: str) -> bool:
        return topic in self.topics

    def subscribers(self) -> list[Subscriber]:
        return [sub for subs in self.topics.values() for sub in subs]

    def offer(self, topic: str, payload: bytes) -> None:
        """A replaceable message (snapshot, update) for every subscriber able to take it."""
        if topic in self.topics:
            self.offer_frame(topic, text_frame(payload))

    def offer_frame(self, topic: str, frame: bytes) -> None:
        for sub in self.topics.get(topic, ()):
            self.offer_to(sub, frame)

    def offer_to(self, sub: Subscriber, frame: bytes) -> None:
        transport = sub.transport
        if sub.closed or transport.is_closing():
            return
        if transport.get_write_buffer_size() > self._high_water:
            self.skipped += 1
            self._mark_slow(sub)
            return
        transport.write(frame)
        self.sent += 1

    def push(self, topic: str, payload: bytes) -> None:
        """An event for every subscriber: written now, or queued behind a full buffer."""
        subs = self.topics.get(topic)
        if subs:
            frame = text_frame(payload)
            for sub in list(subs):
                self._push_to(sub, frame)

    def _push_to(self, sub: Subscriber, frame: bytes) -> None:
        transport = sub.transport
        if sub.closed or transport.is_closing():
            return
        if not sub.events and transport.get_write_buffer_size() <= self._high_water:
            transport.write(frame)
            self.sent += 1
            return
        if len(sub.events) >= self._event_queue:
            self.close_slow(sub)
            return
        sub.events.append(frame)
        self._troubled.add(sub)
        self._mark_slow(sub)

    def _mark_slow(self, sub: Subscriber) -> None:
        if sub.slow_since is None:
            sub.slow_since = time.monotonic()
        self._troubled.add(sub)

    def sweep(self, now: float | None = None) -> None:
        """Deliver queued events where buffers drained; close who stayed stuck too long."""
        now = time.monotonic() if now is None else now
        for sub in list(self._troubled):
            transport = sub.transport
            if sub.closed or transport.is_closing():
                self._troubled.discard(sub)
                continue
            if transport.get_write_buffer_size() <= self._high_water:
                sub.slow_since = None  # it caught up; the events it is owed start a new clock
            while sub.events and transport.get_write_buffer_size() <= self._high_water:
                transport.write(sub.events.popleft())
                self.sent += 1
            if transport.get_write_buffer_size() <= self._high_water:
                if not sub.events:
                    self._troubled.discard(sub)
            elif sub.slow_since is None:
                sub.slow_since = now
            elif now - sub.slow_since > self._slow_close_s:
                self.close_slow(sub)

    def close_slow(self, sub: Subscriber) -> None:
        self.slow_closes += 1
        close_now(sub, CLOSE_TOO_SLOW, "too slow: could not keep up")
        self._troubled.discard(sub)


def close_now(sub: Subscriber, code: int, reason: str) -> None:
    """Close without waiting for the peer: the close frame goes behind what is buffered,
    and the connection is dropped if the peer has not taken it all soon after."""
    if sub.closed:
        return
    sub.closed = True
    sub.events.clear()
    transport = sub.transport
    if transport.is_closing():
        return
    transport.write(close_frame(code, reason))
    transport.close()
    asyncio.get_running_loop().call_later(ABORT_AFTER_S, transport.abort)
