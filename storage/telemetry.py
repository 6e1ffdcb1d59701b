"""Telemetry rows: COPY in, trends out, and (plain PostgreSQL only) the rollups and day
partitions that TimescaleDB would otherwise maintain."""

from __future__ import annotations

from datetime import date, datetime

import asyncpg

from storage.db import Executor

GPU_COLUMNS = ("time", "machine_id", "gpu_index", "util", "mem_used", "mem_total", "temp",
               "power")
MACHINE_COLUMNS = ("time", "machine_id", "cpu_util", "mem_used", "mem_total", "disk_used",
                   "disk_total")
TELEMETRY_TABLES = ("gpu_metrics", "machine_metrics")

# One query for every range: the 1 h rollup for [since_h, rolled_1h), the 1 m rollup for
# [since_m, rolled_1m) outside that, raw rows for [since, since_m) and from rolled_1m on
# (not rolled up yet). since_m and since_h are `since` rounded up to the minute and the
# hour, so a range that starts mid-bucket (a lease start) loses no sample. Every part
# carries sums and counts, so buckets that straddle the parts add up exactly. With
# TimescaleDB the rolled_* watermarks are +infinity: the continuous aggregates are
# real-time and cover the newest rows themselves.
#   $1 since  $2 width_s  $3 since_m  $4 since_h  $5 rolled_1h  $6 rolled_1m  [$7 machine]
_TREND = """
WITH parts AS (
    SELECT bucket AS t, samples, util_sum, util_max, mem_pct_sum FROM gpu_metrics_1h
    WHERE bucket >= $4 AND bucket < $5 {machine}
    UNION ALL
    SELECT bucket, samples, util_sum, util_max, mem_pct_sum FROM gpu_metrics_1m
    WHERE bucket >= $3 AND bucket < $6 AND NOT (bucket >= $4 AND bucket < $5) {machine}
    UNION ALL
    SELECT time, 1, util, util, mem_used::float8 / nullif(mem_total, 0) * 100 FROM gpu_metrics
    WHERE time >= $1 AND (time < $3 OR time >= $6) {machine}
)
SELECT (floor(extract(epoch FROM t) / $2) * $2)::bigint AS ts,
       sum(util_sum) / sum(samples) AS avg_util,
       max(util_max) AS max_util,
       sum(mem_pct_sum) / sum(samples) AS avg_mem_util
FROM parts
GROUP BY 1
ORDER BY 1
"""
_TREND_ALL = _TREND.format(machine="")
_TREND_ONE = _TREND.format(machine="AND machine_id = $7")

_SERIAL = "SET LOCAL max_parallel_workers_per_gather = 0"
_ROLLUP_STATE = "SELECT level, upto FROM telemetry_rollup_state"
_SET_ROLLUP_STATE = "UPDATE telemetry_rollup_state SET upto = $2 WHERE level = $1"
_CLEAR_1M = "DELETE FROM gpu_metrics_1m WHERE bucket = ANY($1::timestamptz[])"
_ROLLUP_1M = """
INSERT INTO gpu_metrics_1m (bucket, machine_id, samples, util_sum, util_max, mem_used_sum,
                            mem_pct_sum, temp_max, power_sum)
SELECT b.start, g.machine_id, count(*), sum(g.util::float8), max(g.util),
       sum(g.mem_used::float8), sum(g.mem_used::float8 / nullif(g.mem_total, 0) * 100),
       max(g.temp), sum(g.power::float8)
FROM unnest($1::timestamptz[]) AS b(start)
JOIN gpu_metrics g ON g.time >= b.start AND g.time < b.start + interval '1 minute'
GROUP BY b.start, g.machine_id
"""
_CLEAR_1H = "DELETE FROM gpu_metrics_1h WHERE bucket = ANY($1::timestamptz[])"
_ROLLUP_1H = """
INSERT INTO gpu_metrics_1h (bucket, machine_id, samples, util_sum, util_max, mem_used_sum,
                            mem_pct_sum, temp_max, power_sum)
SELECT b.start, m.machine_id, sum(m.samples), sum(m.util_sum), max(m.util_max),
       sum(m.mem_used_sum), sum(m.mem_pct_sum), max(m.temp_max), sum(m.power_sum)
FROM unnest($1::timestamptz[]) AS b(start)
JOIN gpu_metrics_1m m ON m.bucket >= b.start AND m.bucket < b.start + interval '1 hour'
GROUP BY b.start, m.machine_id
"""
_ENSURE_PARTITION = "SELECT telemetry_ensure_partition($1, $2)"
_DROP_PARTITIONS = "SELECT telemetry_drop_partitions($1, $2)"
_DELETE_1M_BEFORE = "DELETE FROM gpu_metrics_1m WHERE bucket < $1"
_DELETE_1H_BEFORE = "DELETE FROM gpu_metrics_1h WHERE bucket < $1"


async def copy_gpu_rows(conn: asyncpg.Connection, rows: list[tuple]) -> None:
    await conn.copy_records_to_table("gpu_metrics", records=rows, columns=GPU_COLUMNS)


async def copy_machine_rows(conn: asyncpg.Connection, rows: list[tuple]) -> None:
    await conn.copy_records_to_table("machine_metrics", records=rows, columns=MACHINE_COLUMNS)


async def trend(db: Executor, *, since: datetime, width_s: int, machine_id: str | None,
                rolled_1h: datetime, rolled_1m: datetime) -> list[asyncpg.Record]:
    """Buckets of ``width_s`` seconds (aligned to the epoch) from ``since``; ``rolled_1h``
    and ``rolled_1m`` say up to when each rollup is complete."""
    since_m = _round_up(since, 60)
    since_h = _round_up(since, 3600)
    args = [since, width_s, since_m, since_h, rolled_1h, rolled_1m]
    if machine_id is None:
        return await db.fetch(_TREND_ALL, *args)
    return await db.fetch(_TREND_ONE, *args, machine_id)


def _round_up(moment: datetime, step_s: int) -> datetime:
    epoch = moment.timestamp()
    return datetime.fromtimestamp(-(-epoch // step_s) * step_s, moment.tzinfo)


async def rollup_state(db: Executor) -> dict[str, datetime]:
    return {row["level"]: row["upto"] for row in await db.fetch(_ROLLUP_STATE)}


async def set_rollup_state(db: Executor, level: str, upto: datetime) -> None:
    await db.execute(_SET_ROLLUP_STATE, level, upto)


async def rollup_minutes(conn: asyncpg.Connection, minutes: list[datetime]) -> None:
    """Recompute the 1 m rollup of these minute buckets from raw rows (in the caller's
    transaction). One core only: parallel workers would finish sooner but take every core
    from the ingest meanwhile, and the writer's p99 is what counts."""
    await conn.execute(_SERIAL)
    await conn.execute(_CLEAR_1M, minutes)
    await conn.execute(_ROLLUP_1M, minutes)


async def rollup_hours(conn: asyncpg.Connection, hours: list[datetime]) -> None:
    """Recompute the 1 h rollup of these hour buckets from the 1 m rollup."""
    await conn.execute(_CLEAR_1H, hours)
    await conn.execute(_ROLLUP_1H, hours)


async def ensure_partition(db: Executor, table: str, day: date) -> bool:
    return await db.fetchval(_ENSURE_PARTITION, table, day)


async def drop_partitions(db: Executor, table: str, before: date) -> int:
    return await db.fetchval(_DROP_PARTITIONS, table, before)


async def delete_rollups(db: Executor, *, minutes_before: datetime,
                         hours_before: datetime) -> None:
    await db.execute(_DELETE_1M_BEFORE, minutes_before)
    await db.execute(_DELETE_1H_BEFORE, hours_before)
