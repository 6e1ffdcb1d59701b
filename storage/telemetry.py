"""Telemetry rows: COPY in, trends out, and (plain PostgreSQL only) the rollups and day
partitions that TimescaleDB would otherwise maintain."""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

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


# --- raw rows in, as COPY's binary format ----------------------------------------------------
#
# Each frame's rows are encoded once, when the frame arrives, with one struct call for all
# its GPUs: asyncpg's record encoder costs about 2 us per row on the event loop (20 % of a
# core at 100,000 rows/s); this costs about 0.8 us, and a batch is then a join of bytes.

_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no header extension
_COPY_TRAILER = b"\xff\xff"
# Per field: its byte length, then the value (timestamptz: int64 microseconds since 2000).
_GPU_ROW = "hiqi{n}sih" + "if" * 5  # 8 fields: time, machine_id, gpu_index, util .. power
_MACHINE_ROW = "hiqi{n}s" + "if" * 5  # 7 fields: time, machine_id, cpu_util .. disk_total
_structs: dict[tuple[str, int, int], struct.Struct] = {}


class FrameRows(NamedTuple):
    """One frame as rows for gpu_metrics and machine_metrics, in COPY's binary format."""
    time: datetime
    gpu: bytes
    machine: bytes
    rows: int  # GPU rows + the machine row


def _struct(row: str, id_bytes: int, count: int) -> struct.Struct:
    key = (row, id_bytes, count)
    packer = _structs.get(key)
    if packer is None:
        packer = _structs[key] = struct.Struct(">" + row.format(n=id_bytes) * count)
    return packer


def frame_rows(time: datetime, machine_id: str, host: Sequence[float],
               gpus: Sequence[Mapping[str, Any]]) -> FrameRows:
    """``host``: cpu_util, mem_used, mem_total, disk_used, disk_total; ``gpus``: dicts with
    index, util, mem_used, mem_total, temp, power (values within real's range)."""
    micros = (time - _PG_EPOCH) // _MICROSECOND
    mid = machine_id.encode()
    n = len(mid)
    values: list[Any] = []
    for g in gpus:
        values += (8, 8, micros, n, mid, 2, g["index"], 4, g["util"], 4, g["mem_used"],
                   4, g["mem_total"], 4, g["temp"], 4, g["power"])
    gpu = _struct(_GPU_ROW, n, len(gpus)).pack(*values) if gpus else b""
    cpu_util, mem_used, mem_total, disk_used, disk_total = host
    machine = _struct(_MACHINE_ROW, n, 1).pack(7, 8, micros, n, mid, 4, cpu_util, 4, mem_used,
                                               4, mem_total, 4, disk_used, 4, disk_total)
    return FrameRows(time, gpu, machine, len(gpus) + 1)


class Written(NamedTuple):
    rows: int  # rows now stored
    duplicates: int  # rows that were stored already (not stored again)


# A second copy of a sample (a batch retried after a timeout that PostgreSQL committed
# after all, a frame an agent sent twice) hits the unique key: the plain COPY fails as a
# whole, and that batch is then absorbed through a staging table, keeping each sample once.
_STAGE = {table: f"CREATE TEMP TABLE IF NOT EXISTS {table}_incoming (LIKE {table}) "
                 "ON COMMIT DELETE ROWS" for table in TELEMETRY_TABLES}
_ABSORB = {table: f"INSERT INTO {table} SELECT * FROM {table}_incoming ON CONFLICT DO NOTHING"
           for table in TELEMETRY_TABLES}
_COLUMNS = {"gpu_metrics": GPU_COLUMNS, "machine_metrics": MACHINE_COLUMNS}


async def write_frames(conn: asyncpg.Connection, frames: Sequence[FrameRows], *,
                       timeout: float | None = None) -> Written:
    """Store the rows of these frames, each sample once, however often this is called
    with them (one COPY per table; each is atomic on its own)."""
    rows = duplicates = 0
    for table, parts in (("gpu_metrics", [f.gpu for f in frames]),
                         ("machine_metrics", [f.machine for f in frames])):
        count = len(parts) if table == "machine_metrics" else sum(f.rows - 1 for f in frames)
        if not count:
            continue
        payload = memoryview(b"".join((_COPY_HEADER, *parts, _COPY_TRAILER)))
        try:
            await conn.copy_to_table(table, source=payload, columns=_COLUMNS[table],
                                     format="binary", timeout=timeout)
            rows += count
        except asyncpg.UniqueViolationError:
            stored = await _absorb(conn, table, payload, timeout)
            rows += stored
            duplicates += count - stored
    return Written(rows, duplicates)


async def _absorb(conn: asyncpg.Connection, table: str, payload: memoryview,
                  timeout: float | None) -> int:
    async with conn.transaction():
        await conn.execute(_STAGE[table], timeout=timeout)
        await conn.copy_to_table(f"{table}_incoming", source=payload, columns=_COLUMNS[table],
                                 format="binary", timeout=timeout)
        status = await conn.execute(_ABSORB[table], timeout=timeout)
    return int(status.rsplit(" ", 1)[1])


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


# Maintenance works through whole minutes, hours and days of rows: it may take longer than
# a request's statement may.
MAINTENANCE_TIMEOUT_S = 600.0


async def rollup_minutes(conn: asyncpg.Connection, minutes: list[datetime]) -> None:
    """Recompute the 1 m rollup of these minute buckets from raw rows (in the caller's
    transaction). One core only: parallel workers would finish sooner but take every core
    from the ingest meanwhile, and the writer's p99 is what counts."""
    await conn.execute(_SERIAL)
    await conn.execute(_CLEAR_1M, minutes, timeout=MAINTENANCE_TIMEOUT_S)
    await conn.execute(_ROLLUP_1M, minutes, timeout=MAINTENANCE_TIMEOUT_S)


async def rollup_hours(conn: asyncpg.Connection, hours: list[datetime]) -> None:
    """Recompute the 1 h rollup of these hour buckets from the 1 m rollup."""
    await conn.execute(_CLEAR_1H, hours, timeout=MAINTENANCE_TIMEOUT_S)
    await conn.execute(_ROLLUP_1H, hours, timeout=MAINTENANCE_TIMEOUT_S)


async def ensure_partition(db: Executor, table: str, day: date) -> bool:
    return await db.fetchval(_ENSURE_PARTITION, table, day, timeout=MAINTENANCE_TIMEOUT_S)


async def drop_partitions(db: Executor, table: str, before: date) -> int:
    return await db.fetchval(_DROP_PARTITIONS, table, before, timeout=MAINTENANCE_TIMEOUT_S)


async def delete_rollups(db: Executor, *, minutes_before: datetime,
                         hours_before: datetime) -> None:
    await db.execute(_DELETE_1M_BEFORE, minutes_before, timeout=MAINTENANCE_TIMEOUT_S)
    await db.execute(_DELETE_1H_BEFORE, hours_before, timeout=MAINTENANCE_TIMEOUT_S)


_TIMESCALEDB_JOBS = """
SELECT j.job_id, j.application_name AS name, j.proc_name, j.hypertable_name,
       s.last_run_status, s.last_run_started_at, s.last_successful_finish, s.total_runs,
       s.total_failures
FROM timescaledb_information.jobs j
LEFT JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id
ORDER BY j.job_id
"""


async def timescaledb_jobs(db: Executor) -> list[asyncpg.Record]:
    """TimescaleDB's background jobs (policies) with their last run, on that variant."""
    return await db.fetch(_TIMESCALEDB_JOBS)
