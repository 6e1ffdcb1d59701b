"""CONTRACT.md §3 gpu-trend and §4 customer metrics: buckets of each range aligned to the
epoch, every GPU sample averaged, the rollups (plain PostgreSQL) read in place of the raw
rows they summarise, late samples, and who may ask for what.

Samples are seeded straight into ``gpu_metrics`` with explicit times (or sent as a
heartbeat where the ingest path matters); the expected points are computed here from the
same samples. Values are chosen exact in ``real`` (utilisation in steps of 0.5, memory a
whole number of MiB out of 1024), so sums do not depend on the order of addition and the
numbers can be compared exactly after rounding to 2 decimals, as the service does.
"""

from __future__ import annotations

import struct
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from api.keys import INGEST, PERIODIC, PG_POOL, REDIS, REDIS_KEYS, TIMESCALEDB
from hub.rollups import DirtyMinutes, TelemetryMaintenance
from tests.helpers import Api, call

pytestmark = pytest.mark.telemetry
TREND = "/api/v1/admin/dashboard/gpu-trend"
MY_MACHINES = "/api/v1/customer/machines"
HEARTBEAT = "/api/v1/agent/heartbeat"
# range -> (span, bucket width), seconds (issue 4 point 6: 1h->1m, 6h->5m, 24h->15m, 7d->1h,
# 30d->6h)
RANGES = {
    "1h": (3600, 60),
    "6h": (6 * 3600, 300),
    "24h": (24 * 3600, 900),
    "7d": (7 * 24 * 3600, 3600),
    "30d": (30 * 24 * 3600, 6 * 3600),
}
INSERT = ("INSERT INTO gpu_metrics (time, machine_id, gpu_index, util, mem_used, mem_total, "
          "temp, power) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")


@dataclass(frozen=True)
class Sample:
    t: int  # epoch seconds
    machine: str
    gpu: int
    util: float
    mem_used: float = 512.0
    mem_total: float = 1024.0
    temp: float = 60.0
    power: float = 250.0

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)

    def row(self) -> tuple:
        return (self.time, self.machine, self.gpu, self.util, self.mem_used, self.mem_total,
                self.temp, self.power)


def samples_at(times: Iterable[int]) -> list[Sample]:
    """At each time: m1 reports two GPUs, m2 one GPU at every other time, so the machines
    have different sample counts; values vary with the position."""
    samples = []
    for i, t in enumerate(times):
        gpus = [("m1", 0), ("m1", 1)] + ([("m2", 0)] if i % 2 == 0 else [])
        for n, (machine, gpu) in enumerate(gpus):
            samples.append(Sample(t, machine, gpu, util=(i * 37 + n * 53) % 201 / 2,
                                  mem_used=float((i * 131 + n * 71) % 1025)))
    return samples


def expected(samples: Iterable[Sample], width: int) -> list[dict[str, Any]]:
    """The trend points these samples give: every sample of a bucket weighs the same."""
    buckets: dict[int, list[Sample]] = defaultdict(list)
    for s in samples:
        buckets[s.t // width * width].append(s)
    return [{"ts": ts,
             "avg_util": round(sum(s.util for s in group) / len(group), 2),
             "max_util": round(max(s.util for s in group), 2),
             "avg_mem_util": round(sum(s.mem_used / s.mem_total * 100 for s in group)
                                   / len(group), 2)}
            for ts, group in sorted(buckets.items())]


async def seed(db, samples: Iterable[Sample]) -> None:
    await db.executemany(INSERT, [s.row() for s in samples])


async def trend(api: Api, range_name: str | None = None, **params: str) -> dict[str, Any]:
    if range_name is not None:
        params["range"] = range_name
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return await api.ok("GET", f"{TREND}?{query}" if query else TREND)


def rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def as_real(value: float) -> float:
    """``value`` as PostgreSQL stores it in a ``real`` column."""
    return struct.unpack("f", struct.pack("f", value))[0]


@pytest.fixture
async def client(make_app, aiohttp_client):
    """The app with no background rollup during a test: tests roll up when they mean to."""
    return await aiohttp_client(make_app(rollup_interval_s=3600))


# TimescaleDB refreshes its continuous aggregates itself: the hub's rollup job exists only
# on plain PostgreSQL.
PLAIN_ONLY = pytest.mark.telemetry("plain")


@pytest.fixture
def plain(client):
    assert not client.app[TIMESCALEDB], "mark the test PLAIN_ONLY"


@pytest.fixture
def dirty(client, plain) -> DirtyMinutes:
    """The dirty-minute marks the app's telemetry writer sets (same Redis keys)."""
    return DirtyMinutes(client.app[REDIS], client.app[REDIS_KEYS])


@pytest.fixture
def maintenance(client, dirty) -> TelemetryMaintenance:
    """What the app's rollup job runs, with a clock the test chooses."""
    return TelemetryMaintenance(client.app[PG_POOL], dirty, retention_days=30)


# --- buckets --------------------------------------------------------------------------------


def spread(now: int, span: int, width: int) -> list[int]:
    """Sample times in four buckets of the range (early, middle, and the two before the
    current one: each at its start, inside and at its last second) and now."""
    current = now // width * width
    buckets = span // width
    times = []
    for k in (buckets - 2, buckets // 2, 2, 1):
        start = current - k * width
        times += [start, start + width // 3, start + width - 1]
    return [*times, now]


@pytest.mark.parametrize("range_name", list(RANGES))
async def test_trend_buckets_each_range_by_its_interval_aligned_to_the_epoch(admin, db,
                                                                             range_name):
    span, width = RANGES[range_name]
    samples = samples_at(spread(int(time.time()), span, width))
    await seed(db, samples)
    data = await trend(admin, range_name)
    assert data == {"interval": width, "points": expected(samples, width)}
    assert len(data["points"]) == 5  # the empty buckets between are left out
    assert all(p["ts"] % width == 0 for p in data["points"])
    assert [p["ts"] for p in data["points"]] == sorted(p["ts"] for p in data["points"])


async def test_trend_point_averages_every_gpu_sample_not_the_machine_averages(admin, db):
    minute = int(time.time()) // 60 * 60 - 600
    await seed(db, [Sample(minute + 5, "m1", gpu, util=90.0, mem_used=768.0)
                    for gpu in range(3)] + [Sample(minute + 30, "m2", 0, util=10.0,
                                                   mem_used=0.0)])
    points = (await trend(admin, "1h"))["points"]
    # per-machine means would give 50.0 and 37.5
    assert points == [{"ts": minute, "avg_util": 70.0, "max_util": 90.0,
                       "avg_mem_util": 56.25}]


async def test_trend_includes_the_current_bucket(admin, db):
    now = int(time.time())
    samples = [Sample(now - 1800, "m1", 0, util=20.0), Sample(now, "m1", 0, util=40.0,
                                                                mem_used=256.0)]
    await seed(db, samples)
    for range_name, (_, width) in RANGES.items():
        points = (await trend(admin, range_name))["points"]
        assert points == expected(samples, width), range_name
        assert points[-1]["ts"] == now // width * width, range_name


@pytest.mark.parametrize("range_name", list(RANGES))
async def test_trend_leaves_out_samples_older_than_the_range(admin, db, range_name):
    span, width = RANGES[range_name]
    now = int(time.time())
    inside = Sample(now - span + 2 * width, "m1", 0, util=30.0)
    await seed(db, [Sample(now - span - width - 1, "m1", 0, util=99.0), inside,
                    Sample(now - 400 * 24 * 3600, "m1", 0, util=1.0)])
    assert await trend(admin, range_name) == {"interval": width,
                                              "points": expected([inside], width)}


async def test_trend_of_one_machine_uses_only_its_samples(admin, db):
    now = int(time.time())
    samples = samples_at(spread(now, 3600, 60))
    await seed(db, samples)
    await admin.machine("m2")
    mine = [s for s in samples if s.machine == "m2"]
    assert await trend(admin, "1h", machine_id="m2") == {"interval": 60,
                                                         "points": expected(mine, 60)}


async def test_trend_of_a_quiet_machine_has_no_points(admin):
    await admin.machine("m1")
    assert await trend(admin, "1h", machine_id="m1") == {"interval": 60, "points": []}


async def test_trend_of_an_unknown_machine_is_40401(admin, db):
    await seed(db, samples_at([int(time.time())]))  # samples, but of no registered machine
    status, body = await admin.get(TREND, params={"range": "1h", "machine_id": "m1"})
    assert (status, body["code"]) == (404, 40401)


async def test_trend_of_a_quiet_fleet_has_no_points(admin):
    assert await trend(admin) == {"interval": 900, "points": []}


# --- the admin endpoint -----------------------------------------------------------------------


async def test_gpu_trend_defaults_to_24h(admin, db):
    now = int(time.time())
    samples = samples_at([now - 20 * 3600, now - 3 * 3600, now])
    await seed(db, samples)
    assert await trend(admin) == {"interval": 900, "points": expected(samples, 900)}


@pytest.mark.parametrize("bad", ["2h", "1d", "24H", "", "7 d", "30d;"])
async def test_gpu_trend_rejects_an_unknown_range(admin, bad):
    status, body = await admin.get(TREND, params={"range": bad})
    assert (status, body["code"]) == (400, 40001)
    assert [e["field"] for e in body["data"]["errors"]] == ["range"]


async def test_gpu_trend_is_refused_to_a_customer(client, accounts):
    alice = await Api.login(client, await accounts.customer("alice", "Acme"))
    status, body = await alice.get(TREND)
    assert (status, body["code"]) == (403, 40301)


async def test_gpu_trend_needs_a_token(client):
    status, body = await call(client, "GET", TREND)
    assert (status, body["code"]) == (401, 40101)


# --- rollups (plain PostgreSQL) ---------------------------------------------------------------


def long_series(now: int, span: int, width: int) -> tuple[list[Sample], int]:
    """Samples over the whole range and a moment to roll up at, in the middle of a bucket
    so that it straddles the parts: for 30d the 6 h bucket has an hourly-rolled part, a
    minute-rolled part and a raw tail; for 6h/24h/7d the bucket has a minute-rolled part
    and a raw tail."""
    first = (now - span) // width * width + 2 * width
    mid = (now - span // 2) // width * width
    rollup_at = mid + width // 2 + 130
    watermark = rollup_at // 60 * 60
    times = [first + 1, first + width // 2,
             *(mid + width * j // 8 for j in range(8)),
             watermark - 55, watermark + 5, rollup_at + 10,
             mid + 2 * width + 7, now - 1, now]
    return samples_at(times), rollup_at


@PLAIN_ONLY
@pytest.mark.parametrize("range_name", list(RANGES))
async def test_trend_after_a_rollup_equals_the_trend_of_the_raw_rows(
        admin, db, maintenance, dirty, range_name):
    span, width = RANGES[range_name]
    now = int(time.time())
    samples, rollup_at = long_series(now, span, width)
    await seed(db, [*samples, Sample(now - span - width - 1, "m1", 0, util=99.0)])
    await dirty.mark([s.time for s in samples])  # as the writer does for what it writes
    await maintenance.rollup(datetime.fromtimestamp(rollup_at, UTC))
    assert await db.fetchval("SELECT count(*) FROM gpu_metrics_1m") > 0
    if width >= 3600:  # ranges read from the hourly rollup: it has rows to read
        assert await db.fetchval("SELECT count(*) FROM gpu_metrics_1h") > 0
    assert await trend(admin, range_name) == {"interval": width,
                                              "points": expected(samples, width)}


@PLAIN_ONLY
@pytest.mark.parametrize("range_name", ["7d", "30d"])
async def test_long_range_trend_reads_no_raw_rows_before_the_rollup_watermark(
        admin, db, maintenance, dirty, range_name):
    span, width = RANGES[range_name]
    now = int(time.time())
    samples, rollup_at = long_series(now, span, width)
    await seed(db, samples)
    await dirty.mark([s.time for s in samples])
    await maintenance.rollup(datetime.fromtimestamp(rollup_at, UTC))
    watermark = await db.fetchval("SELECT upto FROM telemetry_rollup_state WHERE level = '1m'")
    assert await db.execute("DELETE FROM gpu_metrics WHERE time < $1", watermark) != "DELETE 0"
    assert await trend(admin, range_name) == {"interval": width,
                                              "points": expected(samples, width)}


@PLAIN_ONLY
async def test_rollup_job_keeps_the_current_bucket_whole(client, admin, db, plain):
    now = int(time.time())
    samples = samples_at([now - 3 * 3600, now - 150, now - 90, now - 30, now])
    await seed(db, samples)
    await client.app[PERIODIC]["rollups"]._job()
    assert await db.fetchval("SELECT count(*) FROM gpu_metrics_1m") > 0
    for range_name, (span, width) in RANGES.items():
        inside = [s for s in samples if s.t > now - span]
        assert await trend(admin, range_name) == {"interval": width,
                                                  "points": expected(inside, width)}


def frame(ts: int, gpus: list[Sample]) -> dict[str, Any]:
    return {"ts": ts, "cpu_util": 10.0, "mem_used": 10, "mem_total": 64, "disk_used": 10,
            "disk_total": 100,
            "gpus": [{"index": g.gpu, "util": g.util, "mem_used": g.mem_used,
                      "mem_total": g.mem_total, "temp": g.temp, "power": g.power}
                     for g in gpus]}


@PLAIN_ONLY
async def test_a_late_sample_written_after_a_rollup_is_in_the_trend_after_the_next_one(
        client, admin, db, plain):
    token = (await admin.machine("m1", gpu_count=2))["agent_token"]
    late = (int(time.time()) - 3 * 3600) // 60 * 60 + 30
    early = [Sample(late + offset, "m1", 0, util=util)
             for offset, util in ((-20, 10.0), (-10, 20.0), (10, 30.0))]
    await seed(db, early)
    rollups = client.app[PERIODIC]["rollups"]
    await rollups._job()
    sent = [Sample(late, "m1", 0, util=95.0, mem_used=1000.0),
            Sample(late, "m1", 1, util=85.5, mem_used=24.0)]
    status, body = await call(client, "POST", HEARTBEAT, token=token, json=frame(late, sent))
    assert status == 200, body
    await client.app[INGEST].flush()  # written, and its minute marked dirty
    await rollups._job()
    minute = datetime.fromtimestamp(late // 60 * 60, UTC)
    assert await db.fetchval("SELECT samples FROM gpu_metrics_1m WHERE bucket = $1",
                             minute) == 5
    for range_name in ("6h", "24h", "7d", "30d"):
        width = RANGES[range_name][1]
        assert await trend(admin, range_name) == {"interval": width,
                                                  "points": expected(early + sent, width)}


async def test_trend_after_a_rollup_keeps_the_precision_of_the_raw_rows(client, admin, db):
    minute = int(time.time()) // 60 * 60 - 300
    # one machine, 8 GPUs, a frame every 5 s: 96 samples in the minute
    samples = [Sample(minute + 5 * k, "m1", gpu, util=50.005)
               for k in range(12) for gpu in range(8)]
    await seed(db, samples)
    if not client.app[TIMESCALEDB]:
        await client.app[PERIODIC]["rollups"]._job()
    util = as_real(50.005)
    assert round(util, 2) == 50.01
    assert (await trend(admin, "1h"))["points"] == [
        {"ts": minute, "avg_util": 50.01, "max_util": 50.01, "avg_mem_util": 50.0}]


# --- customer metrics ------------------------------------------------------------------------


@dataclass
class Tenancy:
    alice: Api  # customer of Acme
    bob: Api  # customer of Beta, which leases m3
    acme: int


@pytest.fixture
async def tenancy(client, admin, accounts) -> Tenancy:
    alice = await accounts.customer("alice", "Acme")
    bob = await accounts.customer("bob", "Beta")
    for n in (1, 2, 3, 4):
        await admin.machine(f"m{n}", gpu_count=2)
    await admin.allocate("m3", bob.tenant_id)
    # m4 stays idle
    return Tenancy(await Api.login(client, alice), await Api.login(client, bob),
                   alice.tenant_id)


async def lease(admin: Api, machine_id: str, tenant_id: int, start: int) -> None:
    await admin.allocate(machine_id, tenant_id, start_time=rfc3339(start))
    items = (await admin.ok("GET", f"/api/v1/admin/allocations?machine_id={machine_id}"))["list"]
    assert items[0]["start_time"] == rfc3339(start)


async def test_customer_metrics_of_an_own_machine_have_the_gpu_trend_shape(admin, db,
                                                                           tenancy):
    now = int(time.time())
    await lease(admin, "m1", tenancy.acme, now - 3000)
    times = [now - 2900, now - 2900 + 59, now - 1200, now - 600, now]
    samples = [Sample(t, "m1", gpu, util=10.0 * i + gpu, mem_used=128.0 * (i + 1))
               for i, t in enumerate(times) for gpu in (0, 1)]
    others = [Sample(t, "m2", 0, util=99.0) for t in times]
    await seed(db, samples + others)
    data = await tenancy.alice.ok("GET", f"{MY_MACHINES}/m1/metrics?range=1h")
    assert data == {"interval": 60, "points": expected(samples, 60)}
    assert data == await trend(admin, "1h", machine_id="m1")


async def test_customer_metrics_leave_out_samples_from_before_the_lease_start(
        client, admin, db, tenancy):
    start = int(time.time()) // 60 * 60 - 1800 + 17  # in the middle of a minute
    await lease(admin, "m1", tenancy.acme, start)
    before = [Sample(start - 600, "m1", 0, util=99.0), Sample(start - 5, "m1", 0, util=98.0),
              Sample(start - 1, "m1", 1, util=97.0)]
    since = [Sample(start, "m1", 0, util=20.0), Sample(start + 5, "m1", 1, util=30.0),
             Sample(start + 300, "m1", 0, util=40.0)]
    await seed(db, before + since)
    for range_name in ("1h", "24h", "7d"):
        width = RANGES[range_name][1]
        data = await tenancy.alice.ok("GET", f"{MY_MACHINES}/m1/metrics?range={range_name}")
        assert data == {"interval": width, "points": expected(since, width)}, range_name


@PLAIN_ONLY
@pytest.mark.parametrize("range_name", ["1h", "24h", "7d"])
async def test_customer_metrics_after_a_rollup_keep_the_first_partial_bucket_of_the_lease(
        admin, db, tenancy, maintenance, range_name):
    now = int(time.time())
    start = now // 3600 * 3600 - 7200 + 20 * 60 + 7 if range_name == "7d" \
        else now // 60 * 60 - 1800 + 17
    await lease(admin, "m1", tenancy.acme, start)
    before = [Sample(start - 5, "m1", 0, util=99.0)]
    since = [Sample(start + 5, "m1", 0, util=20.0), Sample(start + 600, "m1", 1, util=40.0),
             Sample(start + 1500, "m1", 0, util=60.0), Sample(now, "m1", 0, util=80.0)]
    await seed(db, before + since)
    await maintenance.rollup()
    width = RANGES[range_name][1]
    data = await tenancy.alice.ok("GET", f"{MY_MACHINES}/m1/metrics?range={range_name}")
    assert data == {"interval": width, "points": expected(since, width)}


async def test_customer_metrics_of_another_tenants_machine_are_not_found(db, tenancy):
    await seed(db, [Sample(int(time.time()), "m3", 0, util=50.0)])
    for machine_id in ("m3", "m4", "nope"):
        status, body = await tenancy.alice.get(f"{MY_MACHINES}/{machine_id}/metrics?range=1h")
        assert (status, body["code"]) == (404, 40401), machine_id


async def test_customer_metrics_are_refused_to_an_admin(admin, tenancy):
    status, body = await admin.get(f"{MY_MACHINES}/m3/metrics?range=1h")
    assert (status, body["code"]) == (403, 40301)


@pytest.mark.parametrize("bad", ["2h", "1D", ""])
async def test_customer_metrics_reject_an_unknown_range(tenancy, bad):
    status, body = await tenancy.bob.get(f"{MY_MACHINES}/m3/metrics", params={"range": bad})
    assert (status, body["code"]) == (400, 40001)
    assert [e["field"] for e in body["data"]["errors"]] == ["range"]
