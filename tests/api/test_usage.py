"""Usage (issue 12 point 6; CONTRACT.md §4c): leased hours, GPU-hours and busy GPU-hours
per machine for a window, computed by SQL over allocations and the 1 h rollups, on both
telemetry variants, for a tenant's users and for staff.

Leases are seeded straight into ``allocations`` (closed, expired and open ones, with the
times the test needs) and GPU samples straight into ``gpu_metrics``: on TimescaleDB the
real-time continuous aggregates read them; on plain PostgreSQL the query reads raw rows
past the rollup watermark, and after a rollup the rollup tables alone (the raw rows are
then deleted). Expected numbers are worked out by hand in each test, from a base hour H
two days ago, with utilisation values exact in ``real``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest

from api.keys import PG_POOL, REDIS, REDIS_KEYS
from hub.rollups import DirtyMinutes, TelemetryMaintenance
from tests.helpers import Api, call

pytestmark = pytest.mark.telemetry
MY_USAGE = "/api/v1/customer/usage"
ADMIN_USAGE = "/api/v1/admin/usage"
HOUR = 3600
LEASE = """
INSERT INTO allocations (machine_id, machine_name, tenant_id, status, start_time, expires_at,
                         duration_months, closed_at)
VALUES ($1, $1, $2, $3, $4, $5, 1, $6)
"""
SAMPLE = ("INSERT INTO gpu_metrics (time, machine_id, gpu_index, util, mem_used, mem_total, "
          "temp, power) VALUES ($1, $2, $3, $4, 512, 1024, 60, 250)")
PLAIN_ONLY = pytest.mark.telemetry("plain")


def at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def rfc3339(epoch: float) -> str:
    return at(epoch).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
async def client(make_app, aiohttp_client):
    """No background rollup during a test: the tests roll up when they mean to."""
    return await aiohttp_client(make_app(rollup_interval_s=3600))


@dataclass
class World:
    h: int  # the base hour, epoch seconds
    alice: Api  # Acme
    bob: Api  # Beta
    acme: int
    beta: int
    samples: list[datetime]

    def window(self, start_h: float, end_h: float) -> dict[str, str]:
        return {"from": rfc3339(self.h + start_h * HOUR), "to": rfc3339(self.h + end_h * HOUR)}


@pytest.fixture
async def world(client, admin, accounts, db) -> World:
    """Relative to H (window [H, H+10h) in most tests):
    - m1 (2 GPUs): Acme from H-5h, reclaimed at H+3h30; then Beta from H+4h, still open
      (the machine is Beta's now). Samples: hour H GPU0 50 % and GPU1 100 % (mean 75),
      hour H+3 both 40 %, hour H+5 both 80 %, and hour H-1 100 % (before the window).
    - m2 (4 GPUs): Acme from H+6h, expired at H+8h, not reclaimed yet; a sample in hour
      H+8, after the expiry, only.
    - m3 (1 GPU): Acme from H+9h, open for 30 days. Samples in hour H+9: 30 % and 50 %
      (mean 40); one at H+10h01 (after the window).
    - m4 (8 GPUs): never leased, busy all along.
    """
    h = (int(time.time()) // HOUR - 48) * HOUR
    alice = await accounts.customer("alice", "Acme")
    bob = await accounts.customer("bob", "Beta")
    acme, beta = alice.tenant_id, bob.tenant_id
    for machine_id, gpus in (("m1", 2), ("m2", 4), ("m3", 1), ("m4", 8)):
        await admin.machine(machine_id, gpu_count=gpus)
    far = at(h + 9 * HOUR + 30 * 24 * HOUR)
    await db.executemany(LEASE, [
        ("m1", acme, "reclaimed", at(h - 5 * HOUR), far, at(h + 3.5 * HOUR)),
        ("m1", beta, "active", at(h + 4 * HOUR), far, None),
        ("m2", acme, "active", at(h + 6 * HOUR), at(h + 8 * HOUR), None),
        ("m3", acme, "active", at(h + 9 * HOUR), far, None),
    ])
    await db.execute("UPDATE machines SET allocation_status = 'allocated', tenant_id = $1 "
                     "WHERE id = 'm1'", beta)
    samples = [  # (seconds after H, machine, gpu, util)
        (600, "m1", 0, 50.0), (600, "m1", 1, 100.0), (1200, "m1", 0, 50.0),
        (1200, "m1", 1, 100.0),
        (3 * HOUR + 600, "m1", 0, 40.0), (3 * HOUR + 600, "m1", 1, 40.0),
        (5 * HOUR + 60, "m1", 0, 80.0), (5 * HOUR + 60, "m1", 1, 80.0),
        (-HOUR + 60, "m1", 0, 100.0), (-HOUR + 60, "m1", 1, 100.0),
        (8 * HOUR + 60, "m2", 0, 100.0),
        (9 * HOUR + 100, "m3", 0, 30.0), (9 * HOUR + 200, "m3", 0, 50.0),
        (10 * HOUR + 60, "m3", 0, 100.0),
        *((k * HOUR, "m4", gpu, 100.0) for k in range(10) for gpu in range(8)),
    ]
    await db.executemany(SAMPLE, [(at(h + t), m, g, u) for t, m, g, u in samples])
    return World(h, await Api.login(client, alice), await Api.login(client, bob), acme, beta,
                 [at(h + t) for t, *_ in samples])


def row(machine_id: str, leased: float, gpu: float | None, busy: float | None) -> dict:
    return {"machine_id": machine_id, "leased_hours": pytest.approx(leased),
            "gpu_hours": gpu if gpu is None else pytest.approx(gpu),
            "busy_gpu_hours": busy if busy is None else pytest.approx(busy)}


# m1: 3.5 h of Acme's lease in the window; hour H 0.75 x 2 GPUs x 1 h + hour H+3 0.4 x 2 x
# 0.5 h. m2: 2 h to its expiry, no sample while leased. m3: 1 h at 40 % on its one GPU.
ACME = [row("m1", 3.5, 7.0, 1.5 + 0.4), row("m2", 2.0, 8.0, None), row("m3", 1.0, 1.0, 0.4)]
# m1 from H+4h to the window's end: 6 h; hour H+5 0.8 x 2 x 1 h (hour H+3 was Acme's).
BETA = [row("m1", 6.0, 12.0, 1.6)]


async def usage(api: Api, path: str = MY_USAGE, **params) -> dict:
    status, body = await api.get(path, params=params)
    assert status == 200, body
    return body["data"]


async def test_usage_per_machine_matches_the_hand_computed_numbers(world):
    data = await usage(world.alice, **world.window(0, 10))
    assert data == {"from": rfc3339(world.h), "to": rfc3339(world.h + 10 * HOUR),
                    "machines": ACME}


async def test_a_machine_leased_to_another_tenant_since_still_counts_for_its_old_tenant(
        world):
    # m1 is Beta's now; Acme's part of the window stays Acme's, Beta's is Beta's
    assert (await usage(world.alice, **world.window(0, 10)))["machines"][0] == ACME[0]
    assert (await usage(world.bob, **world.window(0, 10)))["machines"] == BETA


async def test_a_window_starting_mid_hour_counts_that_hours_leased_part_only(world):
    # [H+0.5h, H+1.5h): m1 leased 1 h; hour H's mean (75 %) over its half in the window,
    # hour H+1 has no samples
    data = await usage(world.alice, **world.window(0.5, 1.5))
    assert data["machines"] == [row("m1", 1.0, 2.0, 0.75 * 2 * 0.5)]


async def test_a_window_with_no_lease_has_no_machines(world):
    assert (await usage(world.alice, **world.window(-20, -10)))["machines"] == []


async def test_a_window_before_any_telemetry_counts_leases_with_busy_null(world, db):
    await db.execute("DELETE FROM gpu_metrics")
    data = await usage(world.alice, **world.window(0, 10))
    assert data["machines"] == [row("m1", 3.5, 7.0, None), row("m2", 2.0, 8.0, None),
                                row("m3", 1.0, 1.0, None)]


async def test_an_open_lease_counts_up_to_now(world):
    now = time.time()
    data = await usage(world.alice, **{"from": rfc3339(world.h + 9 * HOUR),
                                       "to": rfc3339(now + 86400)})
    leased = (now - (world.h + 9 * HOUR)) / HOUR
    [m3] = data["machines"]
    assert m3["machine_id"] == "m3"
    assert m3["leased_hours"] == pytest.approx(leased, abs=0.01)
    # hour H+9 at 40 %, and hour H+10 (now inside the window) at 100 %
    assert m3["busy_gpu_hours"] == pytest.approx(0.4 + 1.0)
    assert data["to"] == rfc3339(now + 86400)  # the window asked for, not clipped


async def test_a_machine_deleted_since_has_lease_hours_but_unknown_gpu_hours(world, db):
    await db.execute(LEASE, "gone", world.acme, "reclaimed", at(world.h), at(world.h + 99 * HOUR),
                     at(world.h + 2 * HOUR))
    data = await usage(world.alice, **world.window(0, 10))
    assert data["machines"][0] == row("gone", 2.0, None, None)


async def test_a_customer_naming_another_tenant_still_gets_its_own_usage(world):
    # tenant_id is no parameter of the customer route (unknown query parameters are
    # ignored): the caller's tenant is the only one its query can read
    data = await usage(world.alice, tenant_id=world.beta, **world.window(0, 10))
    assert data["machines"] == ACME


async def test_usage_defaults_to_the_last_30_days(world):
    before = time.time()
    data = await usage(world.alice)
    to = datetime.fromisoformat(data["to"]).timestamp()
    assert before - 1 <= to <= time.time() + 1
    assert datetime.fromisoformat(data["from"]) == datetime.fromisoformat(data["to"]) \
        - timedelta(days=30)
    assert [m["machine_id"] for m in data["machines"]] == ["m1", "m2", "m3"]


async def test_usage_answers_in_utc_whatever_zone_was_asked(world):
    india = timezone(timedelta(hours=5, minutes=30))
    start = at(world.h + 0.5 * HOUR).astimezone(india).isoformat()  # 05:30 past an hour there
    data = await usage(world.alice, **{"from": start, "to": rfc3339(world.h + 1.5 * HOUR)})
    assert data["from"] == rfc3339(world.h + 0.5 * HOUR)
    # the hours are UTC hours: hour H's mean over its half in the window, as in UTC
    assert data["machines"] == [row("m1", 1.0, 2.0, 0.75)]


@PLAIN_ONLY
async def test_usage_after_a_rollup_is_read_from_the_rollups_with_the_same_numbers(
        client, world, db):
    pool = client.app[PG_POOL]
    dirty = DirtyMinutes(client.app[REDIS], client.app[REDIS_KEYS])
    await dirty.mark(world.samples)  # as the writer does for what it writes
    await TelemetryMaintenance(pool, dirty, retention_days=30).rollup(datetime.now(UTC))
    watermark = await db.fetchval("SELECT upto FROM telemetry_rollup_state WHERE level = '1h'")
    assert watermark > at(world.h + 11 * HOUR)
    assert await db.execute("DELETE FROM gpu_metrics WHERE time < $1", watermark) != "DELETE 0"
    assert (await usage(world.alice, **world.window(0, 10)))["machines"] == ACME
    assert (await usage(world.bob, **world.window(0, 10)))["machines"] == BETA


# --- staff -----------------------------------------------------------------------------------


async def test_admin_usage_of_a_tenant_is_what_the_tenant_sees(world, admin):
    mine = await usage(world.alice, **world.window(0, 10))
    assert await usage(admin, ADMIN_USAGE, tenant_id=world.acme, **world.window(0, 10)) == mine


async def test_an_operator_reads_usage(world, client, accounts):
    operator = await Api.login(client, await accounts.user("opal", "operator"))
    data = await usage(operator, ADMIN_USAGE, tenant_id=world.beta, **world.window(0, 10))
    assert data["machines"] == BETA


@pytest.mark.parametrize("tenant_id", ["0", "999999"])
async def test_admin_usage_of_an_unknown_tenant_is_40401(world, admin, tenant_id):
    status, body = await admin.get(ADMIN_USAGE, params={"tenant_id": tenant_id})
    assert (status, body["code"]) == (404, 40401)


async def test_admin_usage_needs_a_tenant(world, admin):
    status, body = await admin.get(ADMIN_USAGE)
    assert (status, body["code"]) == (400, 40001)
    assert [e["field"] for e in body["data"]["errors"]] == ["tenant_id"]


async def test_usage_routes_keep_staff_and_customers_apart(world, admin):
    status, body = await world.alice.get(ADMIN_USAGE, params={"tenant_id": world.acme})
    assert (status, body["code"]) == (403, 40301)
    status, body = await admin.get(MY_USAGE)
    assert (status, body["code"]) == (403, 40301)


@pytest.mark.parametrize("path", [MY_USAGE, ADMIN_USAGE])
async def test_usage_needs_a_token(client, path):
    status, body = await call(client, "GET", path)
    assert (status, body["code"]) == (401, 40101)


# --- bad windows -----------------------------------------------------------------------------


@pytest.mark.parametrize(("params", "field"), [
    ({"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "to"),
    ({"from": "2026-03-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "to"),
    ({"from": "2025-01-01T00:00:00Z", "to": "2026-01-02T00:00:01Z"}, "to"),  # > 366 days
    ({"from": "2099-12-01T00:00:00Z"}, "to"),  # to defaults to now
    ({"from": "1969-12-31T23:59:59Z"}, "from"),
    ({"to": "2100-01-01T00:00:00Z"}, "to"),
    ({"from": "yesterday"}, "from"),
    ({"from": "2026-03-01T00:00:00"}, "from"),  # no zone
    ({"to": "0001-01-01T00:00:00+01:00"}, "to"),
])
async def test_bad_usage_windows_are_40001(world, admin, params, field):
    for api, path, extra in ((world.alice, MY_USAGE, {}),
                             (admin, ADMIN_USAGE, {"tenant_id": world.acme})):
        status, body = await api.get(path, params={**params, **extra})
        assert (status, body["code"]) == (400, 40001), path
        assert [e["field"] for e in body["data"]["errors"]] == [field], path


async def test_a_window_of_exactly_366_days_is_allowed(world):
    data = await usage(world.alice, **{"from": "2025-01-01T00:00:00Z",
                                       "to": "2026-01-02T00:00:00Z"})
    assert data["machines"] == []


@pytest.mark.parametrize("tenant_id", ["-1", str(2**63), "acme", ""])
async def test_a_bad_tenant_id_is_40001(world, admin, tenant_id):
    status, body = await admin.get(ADMIN_USAGE, params={"tenant_id": tenant_id})
    assert (status, body["code"]) == (400, 40001)
    assert [e["field"] for e in body["data"]["errors"]] == ["tenant_id"]
