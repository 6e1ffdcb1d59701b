"""The TimescaleDB variant at work (issue 10, point 5): its policies really run in the
background (compression, with the ratio reported; retention; continuous-aggregate
refresh) and each last run ends ``Success`` in ``job_stats``; late samples go into a
compressed chunk, once each; both variants answer the same trends on the same data; and
a failing job shows in /metrics and /readyz.

Jobs are run by TimescaleDB's own scheduler (``alter_job(next_start => now())``), not
``run_job``: a job that works in the foreground may still fail as a background job (the
portal fix of ../shared/tools/timescaledb is about exactly that). Each test has a database
of its own: a refreshed continuous aggregate keeps its watermark after the raw rows are
gone, which would hide the samples of later tests in the shared one.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from api.keys import TIMESCALE_JOBS
from hub.rollups import DirtyMinutes, TelemetryMaintenance
from services.telemetry import TelemetryService
from storage import telemetry
from storage.cache import Keys
from storage.db import create_pool
from tests.conftest import _create_database, _drop_database, _dsn_for
from tests.helpers import call, eventually

pytestmark = pytest.mark.telemetry("timescaledb")
POLICIES = ("policy_compression", "policy_retention", "policy_refresh_continuous_aggregate")


@pytest.fixture
async def scratch(telemetry_variant):
    """Creates migrated databases of a variant for this test only; their pools."""
    made: list[tuple[str, asyncpg.Pool]] = []

    async def make(variant: str = "timescaledb") -> asyncpg.Pool:
        name = f"remotegpu_test_scratch_{uuid.uuid4().hex[:10]}"
        await _create_database(name, variant)
        pool = await create_pool(_dsn_for(name), min_size=1, max_size=3)
        made.append((name, pool))
        return pool

    yield make
    for name, pool in made:
        await pool.close()
        await _drop_database(name)


@pytest.fixture
async def db(scratch):
    return await scratch()


def fleet_day(day: datetime, machines: int, every_s: int, gpus: int = 8
              ) -> list[telemetry.FrameRows]:
    """A day of frames of a small fleet, values moving as real ones do (slowly)."""
    rng = random.Random(3)
    frames = []
    for m in range(machines):
        util = rng.uniform(20, 90)
        for k in range(0, 24 * 3600, every_s):
            util = min(100.0, max(0.0, util + rng.uniform(-2, 2)))
            frames.append(telemetry.frame_rows(
                day + timedelta(seconds=k + m), f"fleet-{m:03d}", (35.0, 180.0, 512.0, 900.0,
                                                                   3800.0),
                [{"index": g, "util": round(util + g, 1), "mem_used": float(int(util * 800)),
                  "mem_total": 81559.0, "temp": round(40 + util / 3, 1),
                  "power": round(90 + util * 6, 1)} for g in range(gpus)]))
    return frames


async def write(db, frames: list[telemetry.FrameRows]) -> None:
    async with db.acquire() as conn:
        for i in range(0, len(frames), 2000):
            await telemetry.write_frames(conn, frames[i:i + 2000], timeout=300)


async def run_in_background(db, *job_ids: int) -> dict[int, str]:
    """Have TimescaleDB's scheduler run the jobs now; each one's last run status."""
    asked = await db.fetchval("SELECT now()")
    for job_id in job_ids:
        await db.execute("SELECT alter_job($1, next_start => now())", job_id)

    async def finished():
        rows = await db.fetch("SELECT job_id, last_run_status FROM "
                              "timescaledb_information.job_stats WHERE job_id = ANY($1) "
                              "AND last_run_started_at >= $2 AND job_status <> 'Running' "
                              "AND last_run_status IS NOT NULL",
                              list(job_ids), asked)
        return {r["job_id"]: r["last_run_status"] for r in rows} if len(rows) == len(
            job_ids) else None

    return await eventually(finished, timeout_s=90, what="the jobs' background runs")


async def job_of(db, proc: str, relation: str) -> int:
    return await db.fetchval(
        "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = $1 AND "
        "hypertable_name = $2", proc, relation)


async def hypertable_of(db, view: str) -> str:
    """The materialization hypertable behind a continuous aggregate."""
    return await db.fetchval(
        "SELECT format('%I.%I', materialization_hypertable_schema, "
        "materialization_hypertable_name) FROM timescaledb_information.continuous_aggregates "
        "WHERE view_name = $1", view)


async def test_every_policy_runs_in_the_background_and_its_last_run_succeeds(db):
    await write(db, fleet_day(datetime.now(UTC) - timedelta(days=3), 2, 600))
    jobs = [r["job_id"] for r in await db.fetch(
        "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = ANY($1)",
        list(POLICIES))]
    assert len(jobs) == 8  # compression x2, retention x4, aggregate refresh x2
    assert set((await run_in_background(db, *jobs)).values()) == {"Success"}


async def test_the_compression_policy_compresses_old_chunks(db, record_property):
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
        days=3)
    await write(db, fleet_day(day, 20, 30))  # 20 machines x 8 GPUs, a frame every 30 s
    job = await job_of(db, "policy_compression", "gpu_metrics")
    assert await run_in_background(db, job) == {job: "Success"}
    stats = await db.fetchrow(
        "SELECT sum(before_compression_total_bytes) AS before, "
        "sum(after_compression_total_bytes) AS after, count(*) FILTER "
        "(WHERE compression_status = 'Compressed') AS compressed "
        "FROM chunk_compression_stats('gpu_metrics')")
    assert stats["compressed"] >= 1
    ratio = stats["before"] / stats["after"]
    record_property("gpu_metrics_compression_ratio", round(ratio, 1))
    print(f"gpu_metrics compression: {stats['before']:,} -> {stats['after']:,} bytes, "
          f"{ratio:.1f}x")
    assert ratio > 5
    # still readable, every row
    assert await db.fetchval("SELECT count(*) FROM gpu_metrics") == 20 * 2880 * 8


async def test_the_retention_policy_drops_chunks_older_than_30_days(db):
    now = datetime.now(UTC)
    await write(db, fleet_day(now - timedelta(days=40), 1, 3600))
    await write(db, fleet_day(now - timedelta(days=20), 1, 3600))
    job = await job_of(db, "policy_retention", "gpu_metrics")
    assert await run_in_background(db, job) == {job: "Success"}
    oldest = await db.fetchval("SELECT min(time) FROM gpu_metrics")
    assert now - timedelta(days=30) < oldest < now - timedelta(days=19)


async def test_the_refresh_policies_materialize_the_minute_and_hour_aggregates(db):
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=5)
    frames = [frame for frame in fleet_day(start, 2, 60) if frame.time < start + timedelta(
        hours=4)]
    await write(db, frames)
    minutes, hours = await hypertable_of(db, "gpu_metrics_1m"), await hypertable_of(
        db, "gpu_metrics_1h")
    assert await db.fetchval(f"SELECT count(*) FROM {minutes}") == 0
    first = await job_of(db, "policy_refresh_continuous_aggregate", "gpu_metrics_1m")
    assert await run_in_background(db, first) == {first: "Success"}
    # 4 hours of 2 machines, a bucket per machine and minute
    assert await db.fetchval(f"SELECT count(*) FROM {minutes}") == 2 * 4 * 60
    second = await job_of(db, "policy_refresh_continuous_aggregate", "gpu_metrics_1h")
    assert await run_in_background(db, second) == {second: "Success"}
    assert await db.fetchval(f"SELECT count(*) FROM {hours}") == 2 * 4
    assert await db.fetchval(f"SELECT sum(samples) FROM {hours}") == len(frames) * 8


async def test_late_samples_go_into_a_compressed_chunk_once_each(db):
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
        days=3)
    frames = fleet_day(day, 2, 600)
    await write(db, frames[::2])
    await db.execute("SELECT compress_chunk(c) FROM show_chunks('gpu_metrics') c")
    assert await db.fetchval("SELECT count(*) FROM timescaledb_information.chunks WHERE "
                             "hypertable_name = 'gpu_metrics' AND is_compressed") >= 1
    async with db.acquire() as conn:
        late = await telemetry.write_frames(conn, frames[1::2])  # new samples, old chunk
        again = await telemetry.write_frames(conn, frames[:10])  # sent twice
    assert (late.rows, late.duplicates) == (len(frames[1::2]) * 9, 0)
    assert (again.rows, again.duplicates) == (0, 90)
    assert await db.fetchval("SELECT count(*) FROM gpu_metrics") == len(frames) * 8


async def test_both_variants_answer_the_same_trends_on_the_same_data(db, scratch,
                                                                     redis_client,
                                                                     redis_prefix):
    plain = await scratch("plain")
    now = datetime.now(UTC)
    frames = [f for f in fleet_day(now - timedelta(hours=23), 3, 97)
              if f.time < now - timedelta(minutes=1)]
    for pool in (plain, db):
        await write(pool, frames)
        await pool.execute("INSERT INTO machines (id, name, ip, agent_token_hash) "
                           "VALUES ('fleet-001', 'fleet-001', '10.0.0.1', $1)", b"\x00" * 32)
    # plain: the hub's rollup job; TimescaleDB: its aggregates, refreshed
    await TelemetryMaintenance(plain, DirtyMinutes(redis_client, Keys(redis_prefix)),
                               retention_days=30).rollup()
    for view in ("gpu_metrics_1m", "gpu_metrics_1h"):
        await db.execute(f"CALL refresh_continuous_aggregate('{view}', NULL, NULL)")
    answers = {}
    for name, pool, timescaledb in (("plain", plain, False), ("timescaledb", db, True)):
        service = TelemetryService(pool, redis_client, Keys(redis_prefix),
                                   timescaledb=timescaledb, heartbeat_timeout_s=30,
                                   known=lambda _: True)
        answers[name] = {(range_name, machine): await service.trend(range_name,
                                                                     machine_id=machine)
                         for range_name in ("1h", "6h", "24h", "7d")
                         for machine in (None, "fleet-001")}
    assert all(points for _, points in answers["plain"].values())
    assert answers["plain"] == answers["timescaledb"]


@pytest.fixture
async def client(make_app, aiohttp_client, db):
    """The app on this test's own database."""
    url = _dsn_for(await db.fetchval("SELECT current_database()"))
    return await aiohttp_client(make_app(database_url=url))


async def test_a_failing_timescaledb_job_shows_in_metrics_and_readyz(client, db, scrape):
    await db.execute("CREATE OR REPLACE PROCEDURE test_failing_job(job_id int, config jsonb) "
                     "LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'boom'; END $$")
    job = await db.fetchval("SELECT add_job('test_failing_job', '1 day')")
    assert await run_in_background(db, job) == {job: "Failed"}
    await client.app[TIMESCALE_JOBS].refresh()
    metrics = await scrape(client)
    assert "remotegpu_timescaledb_jobs_failing 1.0" in metrics
    assert f'remotegpu_timescaledb_job_failed{{job="User-Defined Action [{job}]"}} 1.0' \
        in metrics
    status, body = await call(client, "GET", "/readyz")
    assert status == 200  # a failing job does not make the hub unready
    [failing] = body["data"]["timescaledb"]["failing"]
    assert (failing["job_id"], failing["total_failures"]) == (job, 1)


async def test_the_hub_reads_no_failing_job_on_a_fresh_database(client):
    await client.app[TIMESCALE_JOBS].refresh()
    status, body = await call(client, "GET", "/readyz")
    assert (status, body["data"]["timescaledb"]["failing"]) == (200, [])
    assert body["data"]["timescaledb"]["jobs"] >= 8

