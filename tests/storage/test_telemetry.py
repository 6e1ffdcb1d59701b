"""Telemetry storage (DESIGN.md "Telemetry storage"): the COPY writer with its bounded
queue and retries, and, on plain PostgreSQL only, the rollup tables and the day partitions
that the hub maintains itself (TimescaleDB does that work on its own).

Values are chosen exact in ``real`` (steps of 0.5 or 0.25, memory a whole number of MiB out
of 1024) so sums can be compared exactly.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest

from hub.flow import IngestFlow
from hub.rollups import DirtyMinutes, TelemetryMaintenance
from hub.writer import BACKLOG_FACTOR, TelemetryWriter
from storage import telemetry
from storage.cache import Keys
from storage.db import create_pool
from storage.migrate import applied_telemetry_variant

INSERT_GPU = ("INSERT INTO gpu_metrics (time, machine_id, gpu_index, util, mem_used, "
              "mem_total, temp, power) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
INSERT_MACHINE = ("INSERT INTO machine_metrics (time, machine_id, cpu_util, mem_used, "
                  "mem_total, disk_used, disk_total) VALUES ($1, $2, 1, 2, 4, 8, 16)")
pytestmark = pytest.mark.telemetry
ROLLUP_COLUMNS = ("samples", "util_sum", "util_max", "mem_used_sum", "mem_pct_sum",
                  "temp_max", "power_sum")


@dataclass(frozen=True)
class Sample:
    time: datetime
    machine: str
    gpu: int
    util: float
    mem_used: float = 512.0
    mem_total: float = 1024.0
    temp: float = 60.0
    power: float = 250.0

    def row(self) -> tuple:
        return (self.time, self.machine, self.gpu, self.util, self.mem_used, self.mem_total,
                self.temp, self.power)


def at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def rollup_of(samples: Iterable[Sample], bucket_of) -> dict[tuple, tuple]:
    """What a rollup row should hold, per (bucket, machine)."""
    groups: dict[tuple, list[Sample]] = defaultdict(list)
    for s in samples:
        groups[(bucket_of(s.time), s.machine)].append(s)
    return {key: (len(g), sum(s.util for s in g), max(s.util for s in g),
                  sum(s.mem_used for s in g), sum(s.mem_used / s.mem_total * 100 for s in g),
                  max(s.temp for s in g), sum(s.power for s in g))
            for key, g in groups.items()}


async def rollup_rows(db, table: str) -> dict[tuple, tuple]:
    rows = await db.fetch(f"SELECT bucket, machine_id, {', '.join(ROLLUP_COLUMNS)} "
                          f"FROM {table}")
    return {(r["bucket"], r["machine_id"]): tuple(r[c] for c in ROLLUP_COLUMNS) for r in rows}


async def seed(db, samples: Iterable[Sample]) -> None:
    await db.executemany(INSERT_GPU, [s.row() for s in samples])


async def wait_for(predicate, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


# TimescaleDB keeps its continuous aggregates and chunks itself: the rollup tables and day
# partitions are the hub's work on plain PostgreSQL only.
PLAIN_ONLY = pytest.mark.telemetry("plain")


@pytest.fixture
async def plain(db):
    async with db.acquire() as conn:
        assert await applied_telemetry_variant(conn) == "plain", "mark the test PLAIN_ONLY"
    return db


@pytest.fixture
def dirty(redis_client, redis_prefix) -> DirtyMinutes:
    return DirtyMinutes(redis_client, Keys(redis_prefix))


@pytest.fixture
def maintenance(plain, dirty) -> TelemetryMaintenance:
    return TelemetryMaintenance(plain, dirty, retention_days=30)


# --- rollups ---------------------------------------------------------------------------------


def hour_series(hour: datetime) -> list[Sample]:
    """Samples of m1 (two GPUs) and m2 (one GPU, fewer samples) in the last minutes of the
    hour before ``hour`` and the first minutes of ``hour``."""
    offsets = [-125, -61, -60, -1, 0, 15, 59, 60, 61, 200, 250, 299]
    samples = []
    for i, offset in enumerate(offsets):
        t = hour + timedelta(seconds=offset)
        gpus = [("m1", 0), ("m1", 1)] + ([("m2", 0)] if i % 3 == 0 else [])
        for n, (machine, gpu) in enumerate(gpus):
            samples.append(Sample(t, machine, gpu, util=(i * 37 + n * 53) % 201 / 2,
                                  mem_used=float((i * 131 + n * 71) % 1025),
                                  temp=40 + (i * 7 + n) % 50 / 2, power=100 + i * 3.25 + n))
    return samples


@PLAIN_ONLY
async def test_rollup_writes_per_minute_sums_and_counts_of_the_raw_rows(plain, maintenance):
    hour = hour_of(datetime.now(UTC)) - timedelta(hours=2)
    samples = hour_series(hour)
    await seed(plain, samples)
    await maintenance.rollup(hour + timedelta(minutes=4, seconds=30))
    open_minute = hour + timedelta(minutes=4)
    assert await rollup_rows(plain, "gpu_metrics_1m") == rollup_of(
        [s for s in samples if s.time < open_minute], minute_of)


@PLAIN_ONLY
async def test_rollup_sums_the_minutes_of_each_closed_hour(plain, maintenance):
    hour = hour_of(datetime.now(UTC)) - timedelta(hours=2)
    samples = hour_series(hour)
    await seed(plain, samples)
    await maintenance.rollup(hour + timedelta(minutes=4, seconds=30))
    # only the hour before `hour` is closed
    assert await rollup_rows(plain, "gpu_metrics_1h") == rollup_of(
        [s for s in samples if s.time < hour], hour_of)
    await maintenance.rollup(hour + timedelta(hours=1, seconds=1))
    assert await rollup_rows(plain, "gpu_metrics_1h") == rollup_of(samples, hour_of)


@PLAIN_ONLY
async def test_rollup_moves_the_watermarks_to_the_open_minute_and_hour(plain, maintenance):
    now = datetime(2030, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
    await seed(plain, [Sample(now - timedelta(seconds=1), "m1", 0, util=10.0),
                       Sample(now - timedelta(seconds=5), "m1", 0, util=10.0)])
    await maintenance.rollup(now)
    assert await telemetry.rollup_state(plain) == {
        "1m": datetime(2030, 1, 2, 3, 4, tzinfo=UTC), "1h": datetime(2030, 1, 2, 3, tzinfo=UTC)}
    assert await plain.fetchval("SELECT count(*) FROM gpu_metrics_1m") == 0  # open minute


@PLAIN_ONLY
async def test_rollup_redoes_a_minute_that_got_rows_after_it_was_rolled_up(plain, maintenance,
                                                                         dirty):
    minute = minute_of(datetime.now(UTC)) - timedelta(hours=3)
    first = [Sample(minute + timedelta(seconds=10), "m1", 0, util=10.0)]
    await seed(plain, first)
    await maintenance.rollup()
    late = [Sample(minute + timedelta(seconds=50), "m1", 1, util=30.5, mem_used=1000.0)]
    await seed(plain, late)
    await dirty.mark([s.time for s in late])  # what the writer does after its COPY
    await maintenance.rollup()
    rows = await rollup_rows(plain, "gpu_metrics_1m")
    assert rows == rollup_of(first + late, minute_of)
    assert (await rollup_rows(plain, "gpu_metrics_1h"))[(hour_of(minute), "m1")][0] == 2
    assert await dirty.before(datetime.now(UTC)) == []


@PLAIN_ONLY
async def test_a_marked_minute_older_than_the_catch_up_window_is_rolled_up(plain, maintenance,
                                                                         dirty):
    old = minute_of(datetime.now(UTC)) - timedelta(days=3)
    samples = [Sample(old + timedelta(seconds=s), "m1", 0, util=s / 2) for s in (0, 30, 59)]
    await seed(plain, samples)
    await maintenance.rollup()
    assert await rollup_rows(plain, "gpu_metrics_1m") == {}  # beyond the one-day catch-up
    await dirty.mark([s.time for s in samples])
    await maintenance.rollup()
    assert await rollup_rows(plain, "gpu_metrics_1m") == rollup_of(samples, minute_of)
    assert await rollup_rows(plain, "gpu_metrics_1h") == rollup_of(samples, hour_of)


async def test_a_minute_marked_again_while_rolling_up_stays_marked(dirty):
    minute = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    await dirty.mark([minute + timedelta(seconds=5)])
    marks = await dirty.before(minute + timedelta(minutes=1))
    assert [epoch for epoch, _ in marks] == [int(minute.timestamp())]
    await dirty.mark([minute + timedelta(seconds=40)])  # rows written meanwhile
    await dirty.unmark(marks)
    assert [e for e, _ in await dirty.before(minute + timedelta(minutes=1))] == [
        int(minute.timestamp())]
    await dirty.unmark(await dirty.before(minute + timedelta(minutes=1)))
    assert await dirty.before(minute + timedelta(minutes=1)) == []


@PLAIN_ONLY
async def test_rollup_sums_are_accumulated_in_double_precision(plain, maintenance):
    minute = minute_of(datetime.now(UTC)) - timedelta(minutes=10)
    await seed(plain, [Sample(minute + timedelta(seconds=5 * k), "m1", gpu, util=50.005,
                              mem_used=333.0, power=250.1)
                       for k in range(12) for gpu in range(8)])
    await maintenance.rollup()
    exact = await plain.fetchrow(
        "SELECT sum(util::float8) AS util_sum, sum(mem_used::float8) AS mem_used_sum, "
        "sum(power::float8) AS power_sum FROM gpu_metrics")
    rolled = await plain.fetchrow("SELECT util_sum, mem_used_sum, power_sum FROM gpu_metrics_1m")
    assert dict(rolled) == dict(exact)


# --- partitions -----------------------------------------------------------------------------


def partition(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


async def exists(db, name: str) -> bool:
    return await db.fetchval("SELECT to_regclass($1) IS NOT NULL", name)


async def where(db, table: str) -> dict[str, int]:
    """Rows of ``table`` per partition."""
    rows = await db.fetch(f"SELECT tableoid::regclass::text AS part, count(*) FROM {table} "
                          "GROUP BY 1")
    return {r["part"]: r["count"] for r in rows}


@pytest.fixture
async def scratch_days(plain):
    """Day partitions a test creates or removes; gone again afterwards (the session's
    database is shared by the tests)."""
    days: list[date] = []
    yield days
    for day in days:
        for table in telemetry.TELEMETRY_TABLES:
            await plain.execute(f'DROP TABLE IF EXISTS "{partition(table, day)}"')


@PLAIN_ONLY
async def test_ensure_partition_moves_the_days_rows_out_of_the_default_partition(
        plain, scratch_days):
    day = datetime.now(UTC).date() + timedelta(days=5)
    scratch_days += [day, day + timedelta(days=1)]
    for d in scratch_days:
        await plain.execute(f'DROP TABLE IF EXISTS "{partition("gpu_metrics", d)}"')
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    times = [start, start + timedelta(hours=12), start + timedelta(days=1, microseconds=-1),
             start + timedelta(days=1)]
    await seed(plain, [Sample(t, "m1", 0, util=10.0) for t in times])
    assert await where(plain, "gpu_metrics") == {"gpu_metrics_default": 4}
    assert await plain.fetchval("SELECT telemetry_ensure_partition('gpu_metrics', $1)", day)
    assert await where(plain, "gpu_metrics") == {"gpu_metrics_default": 1,
                                                  partition("gpu_metrics", day): 3}
    assert sorted(await plain.fetchval(
        f"SELECT array_agg(time) FROM {partition('gpu_metrics', day)}")) == times[:3]
    # a second call finds it there
    assert not await plain.fetchval("SELECT telemetry_ensure_partition('gpu_metrics', $1)",
                                    day)


@PLAIN_ONLY
async def test_copy_into_a_day_without_a_partition_lands_in_the_default_partition(
        plain, scratch_days):
    day = datetime.now(UTC).date() + timedelta(days=7)
    scratch_days.append(day)
    for table in telemetry.TELEMETRY_TABLES:
        await plain.execute(f'DROP TABLE IF EXISTS "{partition(table, day)}"')
    moment = datetime(day.year, day.month, day.day, 6, tzinfo=UTC)
    rows = telemetry.frame_rows(moment, "m1", (1.0, 2.0, 4.0, 8.0, 16.0), [
        {"index": 0, "util": 10.0, "mem_used": 512.0, "mem_total": 1024.0, "temp": 60.0,
         "power": 250.0}])
    async with plain.acquire() as conn:
        await telemetry.write_frames(conn, [rows])
    assert await where(plain, "gpu_metrics") == {"gpu_metrics_default": 1}
    assert await where(plain, "machine_metrics") == {"machine_metrics_default": 1}


@PLAIN_ONLY
async def test_partition_maintenance_keeps_yesterday_to_two_days_ahead(plain, maintenance):
    today = datetime.now(UTC).date()
    for table in telemetry.TELEMETRY_TABLES:  # empty here: the tables were just emptied
        for offset in (-1, 2):
            await plain.execute(
                f'DROP TABLE IF EXISTS "{partition(table, today + timedelta(offset))}"')
    await maintenance.partitions(today)
    for table in telemetry.TELEMETRY_TABLES:
        for offset in range(-1, 3):
            assert await exists(plain, partition(table, today + timedelta(offset))), \
                (table, offset)


@PLAIN_ONLY
async def test_partition_maintenance_drops_the_days_past_the_retention(plain, maintenance,
                                                                       scratch_days):
    today = datetime.now(UTC).date()
    old, kept = today - timedelta(days=40), today - timedelta(days=20)
    loose_old, loose_kept = today - timedelta(days=35), today - timedelta(days=10)
    scratch_days += [old, kept, loose_old, loose_kept]
    for table in telemetry.TELEMETRY_TABLES:
        for day in scratch_days:
            await plain.execute(f'DROP TABLE IF EXISTS "{partition(table, day)}"')
        for day in (old, kept):
            assert await plain.fetchval("SELECT telemetry_ensure_partition($1, $2)", table, day)
    for day in scratch_days:
        noon = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
        await seed(plain, [Sample(noon, "m1", 0, util=10.0)])
        await plain.execute(INSERT_MACHINE, noon, "m1")
    await maintenance.partitions(today)
    for table in telemetry.TELEMETRY_TABLES:
        assert not await exists(plain, partition(table, old))
        assert await exists(plain, partition(table, kept))
        assert await where(plain, table) == {f"{table}_default": 1, partition(table, kept): 1}
        assert await plain.fetchval(f"SELECT time::date FROM {table}_default") == loose_kept


# --- the writer ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One frame's rows: as the writer queues them, and as they must read back."""
    queued: telemetry.FrameRows
    gpu: list[tuple]
    machine: tuple


def frame_rows(moment: datetime, machine: str, gpus: int, base: float = 0.0) -> Frame:
    gpu = [(moment, machine, g, base + g, 100.0 * g, 1024.0, 50.0, 200.0) for g in range(gpus)]
    host = (base, 1.0, 64.0, 10.0, 100.0)
    queued = telemetry.frame_rows(moment, machine, host, [
        {"index": r[2], "util": r[3], "mem_used": r[4], "mem_total": r[5], "temp": r[6],
         "power": r[7]} for r in gpu])
    return Frame(queued, gpu, (moment, machine, *host))


def new_writer(pool, *, high_water: int = 1_000_000, **options) -> TelemetryWriter:
    flow = IngestFlow(high_water=high_water, low_water=high_water // 2)
    return TelemetryWriter(pool, flow=flow, **options)


async def stored(db) -> tuple[set[tuple], set[tuple]]:
    gpu = await db.fetch(
        "SELECT time, machine_id, gpu_index, util, mem_used, mem_total, temp, power "
        "FROM gpu_metrics")
    machine = await db.fetch(
        "SELECT time, machine_id, cpu_util, mem_used, mem_total, disk_used, disk_total "
        "FROM machine_metrics")
    return {tuple(r) for r in gpu}, {tuple(r) for r in machine}


def rows_of(frames: Iterable[Frame]) -> tuple[set[tuple], set[tuple]]:
    frames = list(frames)
    return {row for f in frames for row in f.gpu}, {f.machine for f in frames}


async def test_writer_flush_writes_the_rows_of_every_queued_frame(db):
    writer = new_writer(db, batch_rows=1000, flush_s=60, queue_rows=1000)
    now = minute_of(datetime.now(UTC))
    frames = [frame_rows(now + timedelta(seconds=5 * i), f"m{i % 2}", 2 + i % 2, base=i)
              for i in range(5)]
    for f in frames:
        assert writer.add(f.queued)
    assert writer.queued == 17  # 12 GPU rows, 5 machine rows
    assert await stored(db) == (set(), set())
    await writer.flush()
    assert await stored(db) == rows_of(frames)
    assert (writer.queued, writer.rows_written, writer.rows_dropped) == (0, 17, 0)


async def test_writer_splits_a_long_queue_into_batches(db):
    writer = new_writer(db, batch_rows=2, flush_s=60, queue_rows=1000)
    now = minute_of(datetime.now(UTC))
    frames = [frame_rows(now + timedelta(seconds=i), "m1", 3, base=i) for i in range(6)]
    for f in frames:
        writer.add(f.queued)
    await writer.flush()
    assert await stored(db) == rows_of(frames)
    # 24 rows; behind a backlog a batch takes frames up to 2 * BACKLOG_FACTOR rows
    assert writer.batches >= math.ceil(24 / (2 * BACKLOG_FACTOR + 3))


async def test_writer_reports_the_sample_times_it_wrote(db):
    written: list[datetime] = []

    async def on_written(times: Collection[datetime]) -> None:
        written.extend(times)

    writer = new_writer(db, batch_rows=1000, flush_s=60, queue_rows=1000,
                        on_written=on_written)
    late = minute_of(datetime.now(UTC)) - timedelta(hours=3)
    writer.add(frame_rows(late, "m1", 2).queued)
    writer.add(frame_rows(late + timedelta(minutes=1), "m1", 1).queued)
    await writer.flush()
    assert sorted(written) == [late, late + timedelta(minutes=1)]  # each time once


async def test_writer_refuses_and_counts_frames_beyond_its_queue_bound(db):
    writer = new_writer(db, high_water=5, batch_rows=1000, flush_s=60, queue_rows=10)
    now = minute_of(datetime.now(UTC))
    frames = [frame_rows(now + timedelta(seconds=i), "m1", 3, base=i) for i in range(4)]
    accepted = [writer.add(f.queued) for f in frames]  # 4 rows per frame
    assert accepted == [True, True, False, False]
    assert (writer.queued, writer.rows_refused) == (8, 8)
    await writer.flush()
    assert await stored(db) == rows_of(frames[:2])
    assert (writer.rows_written, writer.rows_refused, writer.rows_dropped) == (8, 8, 0)


async def test_writer_refuses_frames_once_it_is_closing_and_writes_what_it_took(db):
    writer = new_writer(db, batch_rows=1000, flush_s=60, queue_rows=1000)
    writer.start()
    now = minute_of(datetime.now(UTC))
    taken, late = frame_rows(now, "m1", 2), frame_rows(now + timedelta(seconds=1), "m1", 2)
    assert writer.add(taken.queued)
    await writer.close(5.0)
    assert not writer.add(late.queued)
    assert await stored(db) == rows_of([taken])
    assert (writer.rows_written, writer.rows_refused, writer.queued) == (3, 3, 0)


async def test_writer_retries_a_batch_while_postgres_is_away_and_writes_it_once(db, pg_proxy):
    proxy, url = pg_proxy
    pool = await create_pool(url, min_size=1, max_size=2)
    writer = new_writer(pool, batch_rows=1000, flush_s=0.05, queue_rows=1000)
    writer.start()
    try:
        now = minute_of(datetime.now(UTC))
        frames = [frame_rows(now + timedelta(seconds=i), "m1", 2, base=i) for i in range(4)]
        writer.add(frames[0].queued)

        async def first_written() -> bool:
            return writer.rows_written == 3

        await wait_for(first_written)
        await proxy.cut()
        for f in frames[1:]:
            assert writer.add(f.queued)

        async def failed() -> bool:
            return writer.failures > 0

        await wait_for(failed)
        assert writer.queued == 9
        await proxy.restore()

        async def all_written() -> bool:
            return writer.queued == 0

        await wait_for(all_written)
        assert await stored(db) == rows_of(frames)
        assert await db.fetchval("SELECT count(*) FROM gpu_metrics") == 8  # none twice
        assert await db.fetchval("SELECT count(*) FROM machine_metrics") == 4
        assert (writer.rows_written, writer.rows_dropped) == (12, 0)
    finally:
        await writer.close(2.0)
        await pool.close()


async def test_writer_keeps_its_backoff_while_frames_arrive_and_logs_the_outage_once(
        db, pg_proxy, caplog):
    proxy, url = pg_proxy
    pool = await create_pool(url, min_size=1, max_size=2)
    # Every frame fills a batch, so every arrival asks for a write at once.
    writer = new_writer(pool, batch_rows=3, flush_s=0.05, queue_rows=100_000)
    writer.start()
    now = minute_of(datetime.now(UTC))
    try:
        with caplog.at_level(logging.WARNING, logger="hub.writer"):
            await proxy.cut()
            for i in range(200):
                assert writer.add(frame_rows(now + timedelta(seconds=i), "m1", 2).queued)
                await asyncio.sleep(0.01)
            attempts = writer.failures
            await proxy.restore()

            async def all_written() -> bool:
                return writer.queued == 0

            await wait_for(all_written)
        # 200 arrivals over ~2 s; the backoff (0.2, 0.4, 0.8, 1.6 s) allows a handful.
        assert 1 <= attempts <= 8
        messages = [r.getMessage() for r in caplog.records if r.name == "hub.writer"]
        assert messages == ["telemetry writes failing; retrying with backoff",
                            "telemetry writes recovered"]
        assert await db.fetchval("SELECT count(*) FROM machine_metrics") == 200
    finally:
        await writer.close(2.0)
        await pool.close()


async def test_a_batch_written_twice_stores_each_sample_once(db):
    now = minute_of(datetime.now(UTC))
    frames = [frame_rows(now + timedelta(seconds=i), "m1", 2, base=i) for i in range(3)]
    async with db.acquire() as conn:
        first = await telemetry.write_frames(conn, [f.queued for f in frames[:2]])
        again = await telemetry.write_frames(conn, [f.queued for f in frames])
    assert (first.rows, first.duplicates) == (6, 0)
    assert (again.rows, again.duplicates) == (3, 6)  # only the third frame was new
    assert await stored(db) == rows_of(frames)
    assert await db.fetchval("SELECT count(*) FROM gpu_metrics") == 6


async def test_a_frame_sent_again_is_counted_as_a_duplicate_not_stored_twice(db):
    writer = new_writer(db, batch_rows=1000, flush_s=60, queue_rows=1000)
    frame = frame_rows(minute_of(datetime.now(UTC)), "m1", 2)
    writer.add(frame.queued)
    await writer.flush()
    writer.add(frame.queued)
    await writer.flush()
    assert (writer.rows_written, writer.duplicates) == (3, 3)
    assert await db.fetchval("SELECT count(*) FROM gpu_metrics") == 2
    assert await db.fetchval("SELECT count(*) FROM machine_metrics") == 1


async def test_the_encoded_rows_read_back_as_every_column_was_given(db):
    moment = datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    gpu = (moment, "m1", 3, 12.5, 2048.0, 4096.0, 66.5, 310.25)
    machine = (moment, "m1", 40.0, 120.5, 256.0, 800.0, 2048.0)
    rows = telemetry.frame_rows(moment, "m1", machine[2:], [
        {"index": 3, "util": 12.5, "mem_used": 2048, "mem_total": 4096, "temp": 66.5,
         "power": 310.25}])
    async with db.acquire() as conn:
        await telemetry.write_frames(conn, [rows])
    assert await stored(db) == ({gpu}, {machine})


async def test_the_encoded_rows_equal_what_asyncpg_would_have_written(db):
    """The hand-made COPY payload against the driver's own encoder, on the same values."""
    moment = datetime.now(UTC) - timedelta(minutes=1, microseconds=7)
    gpus = [{"index": i, "util": 100 / 3 * (i % 4), "mem_used": 81559.0 / (i + 1),
             "mem_total": 81559, "temp": 40.25 + i, "power": 0.1 * i} for i in range(8)]
    host = (33.3, 180.123, 512, 900.5, 3800)
    async with db.acquire() as conn:
        await telemetry.write_frames(conn, [telemetry.frame_rows(moment, "bench-00042", host,
                                                                 gpus)])
        mine = await stored(conn)
        await conn.execute("TRUNCATE gpu_metrics, machine_metrics")
        await conn.copy_records_to_table("gpu_metrics", columns=telemetry.GPU_COLUMNS, records=[
            (moment, "bench-00042", g["index"], g["util"], g["mem_used"], g["mem_total"],
             g["temp"], g["power"]) for g in gpus])
        await conn.copy_records_to_table("machine_metrics", columns=telemetry.MACHINE_COLUMNS,
                                         records=[(moment, "bench-00042", *host)])
        assert mine == await stored(conn)
