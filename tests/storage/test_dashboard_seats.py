"""Dashboard seats: the per-user socket cap, counted in Redis across processes."""

from __future__ import annotations

import asyncio

import pytest

from storage.cache import Keys
from storage.dashboard_seats import DashboardSeats


@pytest.fixture
def seats(redis_client, redis_prefix) -> DashboardSeats:
    return DashboardSeats(redis_client, Keys(redis_prefix), lapse_s=1)


async def test_seats_are_refused_beyond_the_limit_and_counted_per_user(seats):
    assert await seats.take(1, "p1:1", limit=2)
    assert await seats.take(1, "p2:1", limit=2)
    assert not await seats.take(1, "p1:2", limit=2)
    assert await seats.take(2, "p1:3", limit=2)


async def test_a_released_seat_can_be_taken_again(seats):
    assert await seats.take(1, "p1:1", limit=1)
    await seats.release(1, "p1:1")
    assert await seats.take(1, "p2:1", limit=1)


async def test_concurrent_takes_never_exceed_the_limit(seats):
    taken = await asyncio.gather(*(seats.take(1, f"p{n}:1", limit=3) for n in range(20)))
    assert sum(taken) == 3


async def test_seats_of_a_process_that_stopped_renewing_lapse(seats):
    assert await seats.take(1, "dead:1", limit=1)
    assert not await seats.take(1, "live:1", limit=1)
    await asyncio.sleep(1.2)
    assert await seats.take(1, "live:1", limit=1)


async def test_renewed_seats_do_not_lapse(seats):
    assert await seats.take(1, "live:1", limit=1)
    for _ in range(3):
        await asyncio.sleep(0.5)
        await seats.renew([(1, "live:1")])
    assert not await seats.take(1, "other:1", limit=1)


async def test_renewing_a_released_seat_does_not_bring_it_back(seats):
    assert await seats.take(1, "p1:1", limit=1)
    await seats.release(1, "p1:1")
    await seats.renew([(1, "p1:1")])
    assert await seats.take(1, "p2:1", limit=1)
