"""Leases: allocation rules and atomicity, batches, renewal, reclaim (job, failure, force),
and lease expiry run by exactly one process."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from api.keys import JOBS, OPENAPI, PERIODIC
from services.errors import Conflict
from services.ids import JOB, parse_id
from tests.helpers import Api, call

MACHINES = "/api/v1/admin/machines"
ALLOCATIONS = "/api/v1/admin/allocations"


@pytest.fixture
async def tenant(accounts):
    return await accounts.tenant("Acme")


async def _machine_state(db, machine_id):
    row = await db.fetchrow("SELECT allocation_status, tenant_id FROM machines WHERE id = $1",
                            machine_id)
    return tuple(row)


async def test_allocate_leases_an_idle_machine(admin, tenant, db):
    await admin.machine("m1")
    allocation_id = await admin.allocate("m1", tenant, months=3, remark="VIP")
    assert allocation_id.startswith("alloc-")
    assert await _machine_state(db, "m1") == ("allocated", tenant)
    row = await db.fetchrow("SELECT * FROM allocations")
    assert (row["status"], row["duration_months"], row["remark"]) == ("active", 3, "VIP")
    assert row["expires_at"] == await db.fetchval(
        "SELECT $1::timestamptz + interval '3 months'", row["start_time"])


@pytest.mark.parametrize(("start", "months", "expected"), [
    ("2027-01-31T00:00:00Z", 1, "2027-02-28T00:00:00Z"),
    ("2028-01-31T00:00:00Z", 1, "2028-02-29T00:00:00Z"),
    ("2026-02-05T00:00:00Z", 3, "2026-05-05T00:00:00Z"),
    ("2026-08-31T12:30:00Z", 6, "2027-02-28T12:30:00Z"),
    ("2026-03-29T23:00:00Z", 12, "2027-03-29T23:00:00Z"),
])
async def test_expiry_is_calendar_months_in_utc(admin, tenant, start, months, expected):
    await admin.machine("m1")
    await admin.allocate("m1", tenant, months=months, start_time=start)
    item = (await admin.ok("GET", ALLOCATIONS))["list"][0]
    assert (item["start_time"], item["expires_at"]) == (start, expected)


async def test_fifty_concurrent_allocations_of_one_machine_let_exactly_one_win(admin, accounts,
                                                                              db):
    await admin.machine("m1")
    tenants = [await accounts.tenant(f"T{i}") for i in range(5)]
    results = await asyncio.gather(*[
        admin.post(f"{MACHINES}/m1/allocate",
                   {"tenant_id": tenants[i % 5], "duration_months": 1})
        for i in range(50)
    ])
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] + [409] * 49
    assert all(body["code"] == 40901 for status, body in results if status == 409)
    assert await db.fetchval("SELECT count(*) FROM allocations WHERE status <> 'reclaimed'") == 1


async def test_overlapping_concurrent_batches_never_deadlock_or_double_lease(admin, accounts,
                                                                            db):
    for i in range(6):
        await admin.machine(f"m{i}")
    tenants = [await accounts.tenant(f"T{i}") for i in range(4)]
    batches = [["m0", "m1", "m2"], ["m2", "m1", "m0"], ["m3", "m4", "m5", "m0"], ["m5", "m4"]]
    results = await asyncio.gather(*[
        admin.post(ALLOCATIONS, {"tenant_id": tenants[i], "machine_ids": batch,
                                 "duration_months": 1})
        for i, batch in enumerate(batches)
    ])
    assert all(status in (200, 409) for status, _ in results)
    counts = await db.fetch("SELECT machine_id, count(*) FROM allocations GROUP BY 1")
    assert all(row["count"] == 1 for row in counts)
    won = [batch for batch, (status, _) in zip(batches, results, strict=True) if status == 200]
    assert sorted(m for batch in won for m in batch) == sorted(r["machine_id"] for r in counts)


async def test_batch_allocates_every_machine(admin, tenant, db):
    for i in range(3):
        await admin.machine(f"m{i}")
    data = await admin.ok("POST", ALLOCATIONS, {"tenant_id": tenant,
                                                "machine_ids": ["m2", "m0", "m1"],
                                                "duration_months": 2})
    assert len(data["allocation_ids"]) == 3
    rows = await db.fetch("SELECT id, machine_id FROM allocations ORDER BY id")
    assert [r["machine_id"] for r in rows] == ["m2", "m0", "m1"]
    assert [f"alloc-{r['id']}" for r in rows] == data["allocation_ids"]


async def test_batch_with_one_busy_machine_allocates_nothing_and_names_it(admin, accounts, db):
    for i in range(3):
        await admin.machine(f"m{i}")
    other = await accounts.tenant("Other")
    await admin.allocate("m1", other)
    tenant = await accounts.tenant("Acme")
    status, body = await admin.post(ALLOCATIONS, {"tenant_id": tenant,
                                                  "machine_ids": ["m0", "m1", "m2", "ghost"],
                                                  "duration_months": 1})
    assert (status, body["code"]) == (409, 40901)
    assert body["data"]["machines"] == [{"id": "m1", "reason": "machine is allocated"},
                                        {"id": "ghost", "reason": "not found"}]
    assert await db.fetchval("SELECT count(*) FROM allocations WHERE tenant_id = $1",
                             tenant) == 0
    assert await _machine_state(db, "m0") == ("idle", None)


async def test_batch_with_duplicate_ids_is_40001(admin, tenant):
    await admin.machine("m1")
    status, body = await admin.post(ALLOCATIONS, {"tenant_id": tenant,
                                                  "machine_ids": ["m1", "m1"],
                                                  "duration_months": 1})
    assert (status, body["data"]["errors"]) == (
        400, [{"field": "machine_ids[1]", "message": "duplicate machine id"}])


async def test_allocating_a_machine_in_maintenance_is_40901(admin, tenant):
    await admin.machine("m1")
    await admin.ok("POST", f"{MACHINES}/m1/maintenance", {"enabled": True})
    status, body = await admin.post(f"{MACHINES}/m1/allocate",
                                    {"tenant_id": tenant, "duration_months": 1})
    assert (status, body["data"]["machines"]) == (
        409, [{"id": "m1", "reason": "machine is maintenance"}])


async def test_allocating_an_unknown_machine_is_named(admin, tenant):
    status, body = await admin.post(f"{MACHINES}/ghost/allocate",
                                    {"tenant_id": tenant, "duration_months": 1})
    assert (status, body["data"]["machines"]) == (409, [{"id": "ghost", "reason": "not found"}])


async def test_allocating_to_a_disabled_tenant_is_40901(admin, accounts, db):
    await admin.machine("m1")
    disabled = await accounts.tenant("Gone", status="disabled")
    status, body = await admin.post(f"{MACHINES}/m1/allocate",
                                    {"tenant_id": disabled, "duration_months": 1})
    assert (status, body["code"]) == (409, 40901)
    assert await _machine_state(db, "m1") == ("idle", None)


@pytest.mark.parametrize("tenant_id", [0, 999999])
async def test_allocating_to_the_platform_or_an_unknown_tenant_is_40401(admin, tenant_id):
    await admin.machine("m1")
    status, body = await admin.post(f"{MACHINES}/m1/allocate",
                                    {"tenant_id": tenant_id, "duration_months": 1})
    assert (status, body["code"]) == (404, 40401)


@pytest.mark.parametrize("months", [0, 37, -1])
async def test_duration_outside_1_to_36_months_is_40001(admin, tenant, months):
    await admin.machine("m1")
    status, body = await admin.post(f"{MACHINES}/m1/allocate",
                                    {"tenant_id": tenant, "duration_months": months})
    assert (status, body["data"]["errors"][0]["field"]) == (400, "duration_months")


async def test_start_time_without_a_zone_is_40001(admin, tenant):
    await admin.machine("m1")
    status, body = await admin.post(f"{MACHINES}/m1/allocate",
                                    {"tenant_id": tenant, "duration_months": 1,
                                     "start_time": "2026-01-01T00:00:00"})
    assert (status, body["data"]["errors"][0]["field"]) == (400, "start_time")


async def test_an_unknown_body_field_is_40001_naming_it_and_nothing_is_leased(admin, tenant,
                                                                               db):
    await admin.machine("m1")
    status, body = await admin.post(f"{MACHINES}/m1/allocate",
                                    {"tenant_id": tenant, "duration_months": 1, "months": 2})
    assert (status, body["code"], body["data"]["errors"]) == (
        400, 40001, [{"field": "months", "message": "unknown field"}])
    assert await _machine_state(db, "m1") == ("idle", None)


async def test_a_tenant_id_beyond_64_bits_is_40001_when_leasing_one_machine(admin):
    await admin.machine("m1")
    status, body = await admin.post(f"{MACHINES}/m1/allocate",
                                    {"tenant_id": 2**63, "duration_months": 1})
    assert (status, body["code"], body["data"]["errors"][0]["field"]) == (400, 40001,
                                                                          "tenant_id")


async def test_a_tenant_id_beyond_64_bits_is_40001_when_leasing_a_batch(admin):
    await admin.machine("m1")
    status, body = await admin.post(ALLOCATIONS, {"tenant_id": 2**63, "machine_ids": ["m1"],
                                                  "duration_months": 1})
    assert (status, body["code"], body["data"]["errors"][0]["field"]) == (400, 40001,
                                                                          "tenant_id")


async def test_a_tenant_id_filter_beyond_64_bits_is_40001(admin):
    status, body = await admin.get(f"{ALLOCATIONS}?tenant_id={2**63}")
    assert (status, body["code"], body["data"]["errors"][0]["field"]) == (400, 40001,
                                                                          "tenant_id")


async def test_a_start_time_in_year_9999_is_40001_and_nothing_is_leased(admin, tenant, db):
    await admin.machine("m1")
    status, body = await admin.post(f"{MACHINES}/m1/allocate",
                                    {"tenant_id": tenant, "duration_months": 1,
                                     "start_time": "9999-12-01T00:00:00Z"})
    assert (status, body["code"], body["data"]["errors"]) == (
        400, 40001, [{"field": "start_time", "message": "must lie within 10 years of now"}])
    assert await db.fetchval("SELECT count(*) FROM allocations") == 0


async def test_a_start_time_in_year_1_is_40001(admin, tenant):
    await admin.machine("m1")
    status, body = await admin.post(f"{MACHINES}/m1/allocate",
                                    {"tenant_id": tenant, "duration_months": 1,
                                     "start_time": "0001-01-01T00:00:00Z"})
    assert (status, body["code"], body["data"]["errors"][0]["field"]) == (400, 40001,
                                                                          "start_time")


async def test_a_start_time_before_year_1_in_utc_is_40001(admin, tenant):
    await admin.machine("m1")
    status, body = await admin.post(ALLOCATIONS, {"tenant_id": tenant, "machine_ids": ["m1"],
                                                  "duration_months": 1,
                                                  "start_time": "0001-01-01T00:00:00+01:00"})
    assert (status, body["code"], body["data"]["errors"][0]["field"]) == (400, 40001,
                                                                          "start_time")


async def test_a_start_time_eleven_years_ahead_is_40001(admin, tenant):
    await admin.machine("m1")
    start = datetime.now(UTC) + timedelta(days=11 * 365)
    status, body = await admin.post(f"{MACHINES}/m1/allocate",
                                    {"tenant_id": tenant, "duration_months": 1,
                                     "start_time": start.isoformat()})
    assert (status, body["data"]["errors"][0]["field"]) == (400, "start_time")


async def test_a_start_time_nine_years_back_is_accepted(admin, tenant):
    await admin.machine("m1")
    start = (datetime.now(UTC) - timedelta(days=9 * 365)).replace(microsecond=0)
    await admin.allocate("m1", tenant, start_time=start.isoformat())
    item = (await admin.ok("GET", ALLOCATIONS))["list"][0]
    assert item["start_time"] == start.strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_renew_adds_months_without_drifting_month_ends(admin, tenant):
    await admin.machine("m1")
    allocation_id = await admin.allocate("m1", tenant, start_time="2027-01-31T00:00:00Z")
    first = await admin.ok("POST", f"{ALLOCATIONS}/{allocation_id}/renew",
                           {"duration_months": 1})
    assert (first["expires_at"], first["duration_months"]) == ("2027-03-31T00:00:00Z", 2)
    second = await admin.ok("POST", f"{ALLOCATIONS}/{allocation_id}/renew",
                            {"duration_months": 2})
    assert (second["expires_at"], second["duration_months"]) == ("2027-05-31T00:00:00Z", 4)


async def test_concurrent_renewals_each_add_their_months(admin, tenant, db):
    await admin.machine("m1")
    allocation_id = await admin.allocate("m1", tenant, start_time="2027-01-31T00:00:00Z")
    results = await asyncio.gather(*[
        admin.post(f"{ALLOCATIONS}/{allocation_id}/renew", {"duration_months": 1})
        for _ in range(10)])
    assert [status for status, _ in results] == [200] * 10
    row = await db.fetchrow("SELECT duration_months, expires_at::text FROM allocations")
    assert tuple(row) == (11, "2027-12-31 00:00:00+00")


async def test_renewing_a_closed_lease_is_40901(admin, tenant):
    await admin.machine("m1")
    allocation_id = await admin.allocate("m1", tenant)
    await admin.ok("POST", f"{MACHINES}/m1/reclaim", {"reason": "done", "force": True})
    status, body = await admin.post(f"{ALLOCATIONS}/{allocation_id}/renew",
                                    {"duration_months": 1})
    assert (status, body["code"], body["data"]) == (409, 40901, {"status": "reclaimed"})


@pytest.mark.parametrize("bad_id", ["alloc-999", "alloc-x", "999", "job-1",
                                    "alloc-99999999999999999999"])
async def test_renewing_an_unknown_or_malformed_id_is_40401(admin, bad_id):
    status, body = await admin.post(f"{ALLOCATIONS}/{bad_id}/renew", {"duration_months": 1})
    assert (status, body["code"]) == (404, 40401)


async def test_allocation_list_filters_and_pages_newest_first(admin, accounts):
    acme, beta = await accounts.tenant("Acme"), await accounts.tenant("Beta")
    for i in range(4):
        await admin.machine(f"m{i}")
    ids = [await admin.allocate("m0", acme), await admin.allocate("m1", beta),
           await admin.allocate("m2", acme)]
    await admin.ok("POST", f"{MACHINES}/m1/reclaim", {"reason": "overdue"})
    data = await admin.ok("GET", f"{ALLOCATIONS}?page_size=2")
    assert [a["id"] for a in data["list"]] == [ids[2], ids[1]] and data["total"] == 3
    data = await admin.ok("GET", f"{ALLOCATIONS}?tenant_id={acme}")
    assert [a["id"] for a in data["list"]] == [ids[2], ids[0]]
    data = await admin.ok("GET", f"{ALLOCATIONS}?status=reclaiming")
    assert [(a["id"], a["tenant_name"]) for a in data["list"]] == [(ids[1], "Beta")]
    data = await admin.ok("GET", f"{ALLOCATIONS}?machine_id=m2")
    item = data["list"][0]
    assert set(item) >= {"id", "machine_id", "machine_name", "tenant_id", "tenant_name",
                         "status", "start_time", "expires_at", "duration_months", "remark",
                         "created_at", "closed_at", "close_reason"}


async def test_recent_allocations_is_an_array_bounded_by_limit(admin, tenant):
    for i in range(3):
        await admin.machine(f"m{i}")
        await admin.allocate(f"m{i}", tenant)
    data = await admin.ok("GET", f"{ALLOCATIONS}/recent?limit=2")
    assert [a["machine_id"] for a in data] == ["m2", "m1"]
    status, _ = await admin.get(f"{ALLOCATIONS}/recent?limit=51")
    assert status == 400


async def test_reclaim_moves_to_maintenance_and_creates_a_pending_job(admin, tenant, db):
    await admin.machine("m1")
    allocation_id = await admin.allocate("m1", tenant)
    status, body = await admin.post(f"{MACHINES}/m1/reclaim", {"reason": "Payment overdue"})
    assert (status, body["msg"]) == (200, "Reclaim process started")
    assert body["data"]["allocation_id"] == allocation_id
    job = await admin.ok("GET", f"/api/v1/jobs/{body['data']['task_id']}")
    assert (job["kind"], job["status"], job["machine_id"], job["tenant_id"]) == (
        "reclaim", "pending", "m1", tenant)
    assert await _machine_state(db, "m1") == ("maintenance", tenant)
    assert await db.fetchval("SELECT status FROM allocations") == "reclaiming"


async def test_reclaim_answers_its_job_id_as_job_id_and_as_task_id(admin, tenant):
    await admin.machine("m1")
    await admin.allocate("m1", tenant)
    data = await admin.ok("POST", f"{MACHINES}/m1/reclaim", {"reason": "Payment overdue"})
    assert data["job_id"] == data["task_id"]
    assert (await admin.ok("GET", f"/api/v1/jobs/{data['job_id']}"))["kind"] == "reclaim"
    operation = admin.client.app[OPENAPI]["paths"][f"{MACHINES}/{{id}}/reclaim"]["post"]
    data_schema = operation["responses"]["200"]["content"]["application/json"]["schema"][
        "properties"]["data"]
    assert {"job_id", "task_id"} <= set(data_schema["required"])


async def test_successful_reclaim_job_closes_the_lease_and_frees_the_machine(admin, tenant, db):
    await admin.machine("m1")
    await admin.allocate("m1", tenant)
    job_id = (await admin.ok("POST", f"{MACHINES}/m1/reclaim", {"reason": "overdue"}))["task_id"]
    await admin.client.app[JOBS].finish(parse_id(JOB, job_id, "job"), "succeeded",
                                        result={"wiped": True})
    assert await _machine_state(db, "m1") == ("idle", None)
    row = await db.fetchrow("SELECT status, close_reason, closed_at FROM allocations")
    assert (row["status"], row["close_reason"]) == ("reclaimed", "overdue")
    assert row["closed_at"] is not None
    job = await admin.ok("GET", f"/api/v1/jobs/{job_id}")
    assert (job["status"], job["result"]) == ("succeeded", {"wiped": True})
    await admin.allocate("m1", tenant)  # leasable again


async def test_failed_reclaim_job_leaves_the_lease_reclaiming(admin, tenant, db):
    await admin.machine("m1")
    await admin.allocate("m1", tenant)
    job_id = (await admin.ok("POST", f"{MACHINES}/m1/reclaim", {"reason": "x"}))["task_id"]
    await admin.client.app[JOBS].finish(parse_id(JOB, job_id, "job"), "failed",
                                        error="disk busy")
    assert await _machine_state(db, "m1") == ("maintenance", tenant)
    assert await db.fetchval("SELECT status FROM allocations") == "reclaiming"


async def test_reclaiming_an_idle_machine_is_40901(admin):
    await admin.machine("m1")
    status, body = await admin.post(f"{MACHINES}/m1/reclaim", {"reason": "x"})
    assert (status, body["code"]) == (409, 40901)


async def test_reclaiming_an_unknown_machine_is_40401(admin):
    status, _ = await admin.post(f"{MACHINES}/ghost/reclaim", {"reason": "x"})
    assert status == 404


async def test_reclaim_needs_a_reason(admin, tenant):
    await admin.machine("m1")
    await admin.allocate("m1", tenant)
    status, body = await admin.post(f"{MACHINES}/m1/reclaim", {"reason": "  "})
    assert (status, body["data"]["errors"][0]["field"]) == (400, "reason")


async def test_a_second_reclaim_is_40901_naming_the_job_in_flight(admin, tenant):
    await admin.machine("m1")
    await admin.allocate("m1", tenant)
    job_id = (await admin.ok("POST", f"{MACHINES}/m1/reclaim", {"reason": "x"}))["task_id"]
    status, body = await admin.post(f"{MACHINES}/m1/reclaim", {"reason": "again"})
    assert (status, body["data"]) == (409, {"job_id": job_id})


async def test_force_reclaim_closes_the_lease_at_once(admin, tenant, db):
    await admin.machine("m1")
    await admin.allocate("m1", tenant)
    data = await admin.ok("POST", f"{MACHINES}/m1/reclaim", {"reason": "fraud", "force": True})
    assert await _machine_state(db, "m1") == ("idle", None)
    row = await db.fetchrow("SELECT status, close_reason FROM allocations")
    assert tuple(row) == ("reclaimed", "fraud")
    job = await admin.ok("GET", f"/api/v1/jobs/{data['task_id']}")
    assert (job["kind"], job["status"]) == ("reclaim", "cancelled")


async def test_force_reclaim_ends_a_reclaim_stuck_on_a_silent_agent(admin, tenant, db):
    await admin.machine("m1")
    await admin.allocate("m1", tenant)
    stuck = (await admin.ok("POST", f"{MACHINES}/m1/reclaim", {"reason": "x"}))["task_id"]
    data = await admin.ok("POST", f"{MACHINES}/m1/reclaim", {"reason": "agent gone",
                                                            "force": True})
    assert data["task_id"] == stuck
    assert (await admin.ok("GET", f"/api/v1/jobs/{stuck}"))["status"] == "cancelled"
    assert await _machine_state(db, "m1") == ("idle", None)
    assert await db.fetchval("SELECT close_reason FROM allocations") == "agent gone"


async def test_late_success_of_a_cancelled_reclaim_job_is_refused(admin, tenant):
    await admin.machine("m1")
    await admin.allocate("m1", tenant)
    job_id = (await admin.ok("POST", f"{MACHINES}/m1/reclaim", {"reason": "x"}))["task_id"]
    await admin.ok("POST", f"{MACHINES}/m1/reclaim", {"reason": "y", "force": True})
    with pytest.raises(Conflict):
        await admin.client.app[JOBS].finish(parse_id(JOB, job_id, "job"), "succeeded")


async def test_force_reclaim_stops_the_tenants_tasks_on_the_machine(admin, tenant, db):
    await admin.machine("m1")
    await admin.allocate("m1", tenant)
    await db.execute("INSERT INTO tasks (tenant_id, machine_id, name, image, command, status) "
                     "VALUES ($1, 'm1', 'train', 'pytorch:2', 'python train.py', 'running')",
                     tenant)
    await admin.ok("POST", f"{MACHINES}/m1/reclaim", {"reason": "x", "force": True})
    assert tuple(await db.fetchrow("SELECT status, error FROM tasks")) == (
        "stopped", "machine reclaimed")


async def test_customer_cannot_allocate_or_reclaim(client, accounts, admin, tenant):
    await admin.machine("m1")
    customer = await Api.login(client, await accounts.customer("carol", "Carol Co"))
    for path, body in [(f"{MACHINES}/m1/allocate", {"tenant_id": tenant,
                                                    "duration_months": 1}),
                       (f"{MACHINES}/m1/reclaim", {"reason": "x"}),
                       (ALLOCATIONS, {"tenant_id": tenant, "machine_ids": ["m1"],
                                      "duration_months": 1})]:
        status, body = await call(client, "POST", path, token=customer.token, json=body)
        assert (status, body["code"]) == (403, 40301)


async def _wait_for(predicate, timeout_s=10.0):
    for _ in range(int(timeout_s / 0.05)):
        if await predicate():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_expired_lease_is_reclaimed_by_the_lease_check(make_app, aiohttp_client, accounts,
                                                            db):
    client = await aiohttp_client(make_app(lease_check_interval_s=0.1))
    admin = await Api.login(client, await accounts.user("root-admin"))
    tenant = await accounts.tenant("Acme")
    await admin.machine("old")
    await admin.machine("fresh")
    await admin.allocate("old", tenant, months=1, start_time="2020-01-01T00:00:00Z")
    await admin.allocate("fresh", tenant, months=1)

    async def reclaimed():
        return await db.fetchval("SELECT count(*) FROM jobs WHERE kind = 'reclaim'") == 1

    assert await _wait_for(reclaimed)
    job = await db.fetchrow("SELECT machine_id, params FROM jobs")
    assert (job["machine_id"], job["params"]["reason"]) == ("old", "lease expired")
    assert await _machine_state(db, "old") == ("maintenance", tenant)
    assert await _machine_state(db, "fresh") == ("allocated", tenant)


async def test_renewed_lease_is_not_reclaimed(make_app, aiohttp_client, accounts, db):
    # the check runs when the test says, not between the lease and its renewal
    client = await aiohttp_client(make_app(lease_check_interval_s=3600))
    admin = await Api.login(client, await accounts.user("root-admin"))
    tenant = await accounts.tenant("Acme")
    await admin.machine("m1")
    start = datetime(datetime.now(UTC).year - 1, 1, 1, tzinfo=UTC).isoformat()
    allocation_id = await admin.allocate("m1", tenant, months=1, start_time=start)
    await admin.ok("POST", f"{ALLOCATIONS}/{allocation_id}/renew", {"duration_months": 36})
    await client.app[PERIODIC]["lease_expiry"]._job()
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0


async def test_two_processes_share_the_lease_check_and_only_one_runs_it(make_app,
                                                                        aiohttp_client):
    first = await aiohttp_client(make_app(lease_check_interval_s=0.05))
    second = await aiohttp_client(make_app(lease_check_interval_s=0.05))
    job1, job2 = first.app[PERIODIC]["lease_expiry"], second.app[PERIODIC]["lease_expiry"]
    assert await _wait_for(lambda: _ran([job1, job2], at_least=10))
    assert 0 in (job1.runs, job2.runs)


async def _ran(jobs, at_least):
    return sum(job.runs for job in jobs) >= at_least


async def test_the_lease_check_is_taken_over_when_its_process_stops(make_app, aiohttp_client):
    first = await aiohttp_client(make_app(lease_check_interval_s=0.05))
    job1 = first.app[PERIODIC]["lease_expiry"]
    assert await _wait_for(lambda: _ran([job1], at_least=1))
    second = await aiohttp_client(make_app(lease_check_interval_s=0.05))
    job2 = second.app[PERIODIC]["lease_expiry"]
    await first.close()  # clean shutdown releases the lock
    assert await _wait_for(lambda: _ran([job2], at_least=2))


# --- leases stored with dates beyond Python's datetime (years 1..9999) ---------------------
# Stored before start times were bounded, or by hand; each reads clamped into that range.

FAR_LEASES = {  # stored start and end; how the API shows them
    "ends in year 10000": ("9999-12-01 00:00:00+00", "10000-01-01 00:00:00+00",
                           "9999-12-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"),
    "before year 1": ("0002-01-01 00:00:00+00 BC", "0002-02-01 00:00:00+00 BC",
                      "0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
    "infinite": ("-infinity", "infinity", "0001-01-01T00:00:00Z",
                 "9999-12-31T23:59:59.999999Z"),
}
_LEASE_BY_HAND = """
INSERT INTO allocations (machine_id, machine_name, tenant_id, start_time, expires_at,
                         duration_months)
VALUES ('m1', 'm1', $1, $2::text::timestamptz, $3::text::timestamptz, 1)
RETURNING id
"""


async def _lease_by_hand(admin, db, tenant, case):
    """Machine m1 leased to ``tenant`` with the dates of one FAR_LEASES case; its id."""
    await admin.machine("m1")
    await db.execute("UPDATE machines SET allocation_status = 'allocated', tenant_id = $1",
                     tenant)
    start, end, _, _ = FAR_LEASES[case]
    return f"alloc-{await db.fetchval(_LEASE_BY_HAND, tenant, start, end)}"


@pytest.fixture(params=list(FAR_LEASES))
async def far_lease(request, admin, tenant, db):
    """One FAR_LEASES case stored: its allocation id and how its dates are shown."""
    _, _, shown_start, shown_end = FAR_LEASES[request.param]
    return await _lease_by_hand(admin, db, tenant, request.param), shown_start, shown_end


async def test_every_view_of_a_lease_with_far_dates_answers(client, admin, accounts, tenant,
                                                            far_lease):
    allocation_id, shown_start, shown_end = far_lease
    customer = await Api.login(client, await accounts.user("carol", "customer",
                                                           tenant_id=tenant))
    for api, path in [(admin, MACHINES), (admin, f"{MACHINES}/m1"), (admin, ALLOCATIONS),
                      (admin, f"{ALLOCATIONS}/recent"), (customer, "/api/v1/customer/machines"),
                      (customer, "/api/v1/customer/machines/m1/connection"),
                      (customer, "/api/v1/customer/machines/m1/metrics")]:
        status, body = await api.get(path)
        assert status == 200, (path, body)
    [item] = (await admin.ok("GET", ALLOCATIONS))["list"]
    assert (item["id"], item["start_time"], item["expires_at"]) == (allocation_id, shown_start,
                                                                    shown_end)
    assert (await admin.ok("GET", f"{MACHINES}/m1"))["expires_at"] == shown_end


async def test_the_lease_jobs_run_over_a_lease_with_far_dates(client, far_lease):
    await client.app[PERIODIC]["lease_expiry"]._job()  # raises if any step fails


async def test_a_lease_with_far_dates_can_be_force_reclaimed(admin, db, far_lease):
    await admin.ok("POST", f"{MACHINES}/m1/reclaim", {"reason": "repair", "force": True})
    assert await db.fetchval("SELECT status FROM allocations") == "reclaimed"
    assert await _machine_state(db, "m1") == ("idle", None)


@pytest.mark.parametrize("case", ["ends in year 10000", "infinite"])
async def test_renewing_a_lease_past_year_9999_is_40001_and_changes_nothing(admin, db, tenant,
                                                                            case):
    allocation_id = await _lease_by_hand(admin, db, tenant, case)
    before = await db.fetchrow("SELECT expires_at::text, duration_months FROM allocations")
    status, body = await admin.post(f"{ALLOCATIONS}/{allocation_id}/renew",
                                    {"duration_months": 1})
    assert (status, body["code"], body["data"]["errors"][0]["field"]) == (
        400, 40001, "duration_months"), body
    assert await db.fetchrow("SELECT expires_at::text, duration_months FROM allocations") == (
        before)
