"""The dashboard fan-out on its own (issue 6, point 2: hub/fanout.py): WebSocket frames
built once, and the backpressure rules: above the high-water mark snapshots and updates are
skipped, events wait in a bounded queue and go out in order once the buffer drains; a
subscriber stuck above the mark longer than ``slow_close_s``, or whose event queue
overflows, is closed with 4008 and dropped soon after. A small in-memory transport stands
in for the socket: its buffer grows with every write until the test "drains" it."""

from __future__ import annotations

import asyncio
import struct
import time

import pytest

from hub import fanout as fanout_module
from hub.fanout import (
    CLOSE_GOING_AWAY,
    CLOSE_TOO_SLOW,
    Fanout,
    Subscriber,
    close_now,
)
from hub.protocol import close_frame, text_frame

MARK = 1000
SLOW_S = 5.0


class FakeTransport:
    """Write buffer of a peer that reads nothing until ``drain``."""

    def __init__(self, buffered: int = 0) -> None:
        self.buffered = buffered
        self.written: list[bytes] = []
        self.closing = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closing, "write after close"
        self.written.append(data)
        self.buffered += len(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True
        self.aborted = True

    def drain(self) -> None:
        self.buffered = 0


def decode(data: bytes) -> tuple[bool, int, bytes, int]:
    """(fin, opcode, payload, header size) of one whole unmasked frame (RFC 6455 §5.2)."""
    first, second = data[0], data[1]
    assert not second & 0x80, "server frames are not masked"
    size, at = second & 0x7F, 2
    if size == 126:
        (size,), at = struct.unpack_from("!H", data, 2), 4
    elif size == 127:
        (size,), at = struct.unpack_from("!Q", data, 2), 10
    assert len(data) == at + size, "exactly one frame"
    assert not first & 0x70, "no reserved bits (no compression)"
    return bool(first & 0x80), first & 0x0F, data[at:], at


def subscriber(transport: FakeTransport, topic: str = "t") -> Subscriber:
    return Subscriber(transport=transport, topic=topic, role="admin", user_id=1,
                      tenant_id=0, sid="s")


def fanout(*, event_queue: int = 3) -> Fanout:
    return Fanout(high_water_bytes=MARK, slow_close_s=SLOW_S, event_queue=event_queue)


def texts(transport: FakeTransport) -> list[bytes]:
    return [decode(frame)[2] for frame in transport.written]


def close_code(frame: bytes) -> tuple[int, bytes]:
    _, opcode, payload, _ = decode(frame)
    assert opcode == 0x8
    return struct.unpack("!H", payload[:2])[0], payload[2:]


@pytest.mark.parametrize(("size", "header"), [(0, 2), (125, 2), (126, 4), (65535, 4),
                                              (65536, 10), (70000, 10)])
def test_text_frames_use_the_shortest_length_encoding(size, header):
    payload = bytes([0x61 + i % 26 for i in range(size)])
    frame = text_frame(payload)
    assert decode(frame) == (True, 0x1, payload, header)
    assert frame[0] == 0x81
    if header == 4:
        assert frame[1] == 126
    elif header == 10:
        assert frame[1] == 127


def test_close_frames_carry_the_code_and_a_reason_of_at_most_123_bytes():
    assert close_code(close_frame(CLOSE_TOO_SLOW, "too slow")) == (4008, b"too slow")
    fin, opcode, payload, header = decode(close_frame(CLOSE_GOING_AWAY, "x" * 500))
    assert (fin, opcode, header) == (True, 0x8, 2)
    assert len(payload) == 125  # control frames: at most 125 bytes
    assert struct.unpack("!H", payload[:2]) == (1001,)


def test_an_offer_is_written_once_as_the_same_bytes_to_every_subscriber():
    hub = fanout()
    first, second, elsewhere = FakeTransport(), FakeTransport(), FakeTransport()
    for transport, topic in ((first, "t"), (second, "t"), (elsewhere, "u")):
        hub.add(subscriber(transport, topic))
    hub.offer("t", b'{"type":"monitoring_snapshot"}')
    assert texts(first) == texts(second) == [b'{"type":"monitoring_snapshot"}']
    assert first.written[0] is second.written[0]  # encoded once
    assert elsewhere.written == []
    assert (hub.sent, hub.skipped) == (2, 0)
    hub.offer("nobody", b"{}")
    assert hub.sent == 2


def test_offers_are_skipped_above_the_mark_and_counted():
    hub = fanout()
    slow, fast = FakeTransport(buffered=MARK + 1), FakeTransport(buffered=MARK)
    slow_sub, fast_sub = subscriber(slow), subscriber(fast)
    hub.add(slow_sub)
    hub.add(fast_sub)
    hub.offer("t", b"1")
    fast.buffered = MARK  # at the mark is not above it
    hub.offer("t", b"2")
    assert slow.written == []
    assert texts(fast) == [b"1", b"2"]
    assert (hub.sent, hub.skipped) == (2, 2)
    assert slow_sub.slow_since is not None and fast_sub.slow_since is None
    # it drains: it gets the next one, never the ones it missed
    slow.drain()
    hub.offer("t", b"3")
    assert texts(slow) == [b"3"]


def test_events_wait_above_the_mark_and_go_out_in_order_once_the_buffer_drains():
    hub = fanout(event_queue=10)
    transport = FakeTransport(buffered=MARK + 1)
    sub = subscriber(transport)
    hub.add(sub)
    for n in range(3):
        hub.push("t", b'{"n":%d}' % n)
    assert transport.written == [] and len(sub.events) == 3
    hub.sweep()
    assert transport.written == []  # still full: nothing moves
    transport.drain()
    # an event pushed after the drain but before the sweep queues behind the others
    hub.push("t", b'{"n":3}')
    hub.sweep()
    assert texts(transport) == [b'{"n":%d}' % n for n in range(4)]
    assert not sub.events and sub.slow_since is None
    assert hub.sent == 4 and hub.slow_closes == 0


def test_a_sweep_delivers_queued_events_only_while_the_buffer_stays_under_the_mark():
    hub = fanout(event_queue=10)
    transport = FakeTransport(buffered=MARK + 1)
    sub = subscriber(transport)
    hub.add(sub)
    event = b"x" * 600  # a frame of 603 bytes: two of them pass the mark
    for _ in range(3):
        hub.push("t", event)
    transport.drain()
    hub.sweep()
    assert len(transport.written) == 2 and len(sub.events) == 1
    transport.drain()
    hub.sweep()
    assert len(transport.written) == 3 and not sub.events


def test_events_are_written_at_once_under_the_mark():
    hub = fanout()
    transport = FakeTransport()
    hub.add(subscriber(transport))
    hub.push("t", b'{"type":"alert"}')
    assert texts(transport) == [b'{"type":"alert"}']
    hub.push("nobody", b"{}")
    assert hub.sent == 1


async def test_an_event_queue_overflow_closes_with_4008_and_drops_the_peer(monkeypatch):
    monkeypatch.setattr(fanout_module, "ABORT_AFTER_S", 0.01)
    hub = fanout(event_queue=2)
    transport, other = FakeTransport(buffered=MARK + 1), FakeTransport()
    sub = subscriber(transport)
    hub.add(sub)
    hub.add(subscriber(other))
    hub.push("t", b"1")
    hub.push("t", b"2")
    assert transport.written == [] and hub.slow_closes == 0
    hub.push("t", b"3")  # one more than the queue holds
    assert hub.slow_closes == 1
    assert sub.closed and not sub.events
    [frame] = transport.written
    assert close_code(frame) == (4008, b"too slow: could not keep up")
    assert transport.closing and not transport.aborted
    await asyncio.sleep(0.05)
    assert transport.aborted  # it never took the close frame
    # the other subscriber got every event
    assert texts(other) == [b"1", b"2", b"3"]


async def test_a_sweep_closes_a_subscriber_above_the_mark_longer_than_slow_close_s():
    hub = fanout()
    transport = FakeTransport(buffered=MARK + 1)
    sub = subscriber(transport)
    hub.add(sub)
    hub.offer("t", b"skipped")
    since = sub.slow_since
    assert since is not None and since <= time.monotonic()
    hub.sweep(now=since + SLOW_S / 2)
    hub.sweep(now=since + SLOW_S)  # not longer than slow_close_s yet
    assert not sub.closed and transport.written == []
    hub.sweep(now=since + SLOW_S + 0.01)
    assert sub.closed and hub.slow_closes == 1
    [frame] = transport.written
    assert close_code(frame)[0] == CLOSE_TOO_SLOW
    assert transport.closing
    hub.sweep(now=since + 2 * SLOW_S)
    assert hub.slow_closes == 1  # closed once


async def test_a_subscriber_that_drains_in_time_is_not_closed():
    hub = fanout()
    transport = FakeTransport(buffered=MARK + 1)
    sub = subscriber(transport)
    hub.add(sub)
    hub.offer("t", b"skipped")
    since = sub.slow_since
    assert since is not None
    transport.drain()
    hub.sweep(now=since + SLOW_S / 2)
    assert sub.slow_since is None
    # above the mark again later: the clock starts again
    transport.buffered = MARK + 1
    hub.offer("t", b"skipped again")
    hub.sweep(now=time.monotonic() + SLOW_S / 2)
    assert not sub.closed and hub.slow_closes == 0


async def test_a_subscriber_that_drained_is_not_closed_by_the_events_it_was_owed():
    hub = fanout(event_queue=10)
    transport = FakeTransport(buffered=MARK + 1)
    sub = subscriber(transport)
    hub.add(sub)
    hub.push("t", b"x" * 600)
    hub.push("t", b"y" * 600)
    since = sub.slow_since
    assert since is not None
    transport.drain()  # it caught up, just before the deadline passed
    hub.sweep(now=since + SLOW_S + 0.01)
    assert len(transport.written) == 2  # both events written; the buffer is above the mark
    assert not sub.closed and hub.slow_closes == 0


async def test_a_closed_subscriber_gets_nothing():
    hub = fanout()
    transport = FakeTransport()
    sub = subscriber(transport)
    hub.add(sub)
    close_now(sub, CLOSE_GOING_AWAY, "server shutting down")
    assert close_code(transport.written[0]) == (1001, b"server shutting down")
    close_now(sub, CLOSE_TOO_SLOW, "again")  # closing twice writes nothing more
    transport.closing = False  # even were the transport still open
    hub.offer("t", b"snapshot")
    hub.push("t", b"event")
    hub.sweep()
    assert len(transport.written) == 1 and not sub.events
    assert hub.sent == 0


async def test_a_closing_transport_gets_nothing_and_no_close_frame():
    hub = fanout()
    transport = FakeTransport()
    sub = subscriber(transport)
    hub.add(sub)
    transport.close()  # the peer went away
    hub.offer("t", b"snapshot")
    hub.push("t", b"event")
    close_now(sub, CLOSE_TOO_SLOW, "too slow")
    assert transport.written == [] and sub.closed
    assert (hub.sent, hub.skipped) == (0, 0)


def test_removed_subscribers_leave_their_topic_and_the_sweep():
    hub = fanout()
    transport = FakeTransport(buffered=MARK + 1)
    sub = subscriber(transport)
    hub.add(sub)
    assert hub.has("t") and hub.subscribers() == [sub]
    hub.push("t", b"queued")
    hub.remove(sub)
    assert not hub.has("t") and hub.subscribers() == []
    transport.drain()
    hub.sweep()
    assert transport.written == []
    hub.remove(sub)  # twice is harmless
