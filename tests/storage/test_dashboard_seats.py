"""Dashboard seats: the per-user socket cap, counted in Redis across processes."""

from __future__ import annotations

import asyncio

import pytest

from storage.cache import Keys
from storage.dashboard_seats import DashboardSeats


@pytest.fixture
def process(redis_client, redis_prefix):
    """A hub process's seats (``process("p1")``); seats lapse 1 s after its last sign."""
    def make(process_id: str) -> DashboardSeats:
        return DashboardSeats(redis_client, Keys(redis_prefix), process_id=process_id,
                              lapse_s=1)
    return make


async def test_seats_are_refused_beyond_the_limit_over_every_process(process):
    p1, p2 = process("p1"), process("p2")
    assert await p1.take(1, limit=2)
    assert await p2.take(1, limit=2)
    assert not await p1.take(1, limit=2)
    assert not await p2.take(1, limit=2)


async def test_seats_are_counted_per_user(process):
    p1 = process("p1")
    assert await p1.take(1, limit=1)
    assert await p1.take(2, limit=1)


async def test_a_released_seat_can_be_taken_again_on_another_process(process):
    p1, p2 = process("p1"), process("p2")
    assert await p1.take(1, limit=1)
    await p1.release(1)
    assert await p2.take(1, limit=1)


async def test_concurrent_takes_never_exceed_the_limit(process):
    processes = [process(f"p{n}") for n in range(20)]
    taken = await asyncio.gather(*(p.take(1, limit=3) for p in processes))
    assert sum(taken) == 3


async def test_seats_of_a_process_that_stopped_renewing_lapse(process):
    dead, live = process("dead"), process("live")
    assert await dead.take(1, limit=1)
    assert not await live.take(1, limit=1)
    await asyncio.sleep(1.2)
    assert await live.take(1, limit=1)


async def test_seats_of_a_process_that_keeps_renewing_do_not_lapse(process):
    live, other = process("live"), process("other")
    assert await live.take(1, limit=1)
    for _ in range(3):
        await asyncio.sleep(0.5)
        await live.keep_alive()
    assert not await other.take(1, limit=1)


async def test_a_corrected_count_replaces_what_a_failed_release_left(process):
    p1, p2 = process("p1"), process("p2")
    assert await p1.take(1, limit=2)
    assert await p1.take(1, limit=2)
    await p1.set_held(1, 1)  # one of the two sockets closed while Redis was unreachable
    assert await p2.take(1, limit=2)
    assert not await p2.take(1, limit=2)
    await p1.set_held(1, 0)
    assert await p2.take(1, limit=2)
