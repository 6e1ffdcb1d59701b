"""Plain PostgreSQL only: the work TimescaleDB would do by itself. The 1 m and 1 h
rollups catch up every ``REMOTEGPU_ROLLUP_INTERVAL_S``; day partitions are created ahead
and dropped after the retention period. Both run in one process at a time.

Late frames (up to 24 h old) are rolled up too: the telemetry writer marks every minute it
wrote rows for in a Redis sorted set, and the rollup recomputes those minutes. A minute is
unmarked only if nobody marked it again while it was being recomputed.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import UTC, date, datetime, timedelta

import asyncpg
import redis.asyncio as redis

from storage import telemetry
from storage.cache import Keys

log = logging.getLogger(__name__)

PARTITION_DAYS_AHEAD = 2
CATCH_UP = timedelta(days=1)
MINUTE_RETENTION_DAYS = 30
HOUR_RETENTION_DAYS = 365

_MARK = """
local seq = redis.call('INCR', KEYS[2])
for i = 1, #ARGV do redis.call('ZADD', KEYS[1], seq, ARGV[i]) end
return seq
"""
_UNMARK = """
local removed = 0
for i = 1, #ARGV, 2 do
    if redis.call('ZSCORE', KEYS[1], ARGV[i]) == ARGV[i + 1] then
        removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
    end
end
return removed
"""


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


class DirtyMinutes:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._redis = client
        self._key = keys.dirty_minutes()
        self._seq_key = keys.dirty_sequence()

    async def mark(self, times: Collection[datetime]) -> None:
        minutes = {int(t.timestamp()) // 60 * 60 for t in times}
        await self._redis.eval(_MARK, 2, self._key, self._seq_key, *sorted(minutes))

    async def before(self, limit: datetime) -> list[tuple[int, str]]:
        """Marked minutes (epoch seconds) before ``limit``, each with its mark."""
        rows = await self._redis.zrange(self._key, 0, -1, withscores=True)
        cutoff = limit.timestamp()
        return [(int(member), str(int(score))) for member, score in rows
                if int(member) < cutoff]

    async def unmark(self, marks: list[tuple[int, str]]) -> None:
        if marks:
            pairs = [value for minute, mark in marks for value in (str(minute), mark)]
            await self._redis.eval(_UNMARK, 1, self._key, *pairs)


class TelemetryMaintenance:
    def __init__(self, pool: asyncpg.Pool, dirty: DirtyMinutes, *, retention_days: int) -> None:
        self._pool = pool
        self._dirty = dirty
        self._retention_days = retention_days

    async def rollup(self, now: datetime | None = None) -> None:
        """Bring the rollups up to the current minute (the open minute stays raw)."""
        now = now or datetime.now(UTC)
        upto = minute_of(now)
        state = await telemetry.rollup_state(self._pool)
        # Always every minute since the last run (at most a day back), even if a mark was
        # lost, plus any older minute a late frame landed in.
        start = max(state["1m"], upto - CATCH_UP)
        minutes = {start + timedelta(minutes=i)
                   for i in range(int((upto - start).total_seconds() // 60))}
        marks = await self._dirty.before(upto)
        minutes |= {datetime.fromtimestamp(epoch, UTC) for epoch, _ in marks}
        hours = {m.replace(minute=0) for m in minutes}
        hour_upto = upto.replace(minute=0)
        async with self._pool.acquire() as conn, conn.transaction():
            if minutes:
                await telemetry.rollup_minutes(conn, sorted(minutes))
            closed_hours = sorted(h for h in hours if h < hour_upto)
            if closed_hours:
                await telemetry.rollup_hours(conn, closed_hours)
            await telemetry.set_rollup_state(conn, "1m", upto)
            await telemetry.set_rollup_state(conn, "1h", hour_upto)
        await self._dirty.unmark(marks)

    async def partitions(self, today: date | None = None) -> None:
        """Day partitions for yesterday to two days ahead; drop those past retention."""
        today = today or datetime.now(UTC).date()
        for table in telemetry.TELEMETRY_TABLES:
            for offset in range(-1, PARTITION_DAYS_AHEAD + 1):
                await telemetry.ensure_partition(self._pool, table, today + timedelta(offset))
            dropped = await telemetry.drop_partitions(
                self._pool, table, today - timedelta(days=self._retention_days))
            if dropped:
                log.info("old telemetry partitions dropped",
                         extra={"table": table, "partitions": dropped})
        await telemetry.delete_rollups(
            self._pool,
            minutes_before=datetime.now(UTC) - timedelta(days=MINUTE_RETENTION_DAYS),
            hours_before=datetime.now(UTC) - timedelta(days=HOUR_RETENTION_DAYS),
        )
