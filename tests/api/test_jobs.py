"""Job lists (issue 12 point 5; CONTRACT.md §3 and §3a): ``/api/v1/admin/jobs`` for staff
and ``/api/v1/customer/jobs`` for a tenant's users, paged, filtered, newest first, and
confined to the caller's tenant in the query.

Jobs are seeded straight into the table with explicit creation times, so the order is
known; the machines are registered through the API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from tests.helpers import Api, call

ADMIN_JOBS = "/api/v1/admin/jobs"
MY_JOBS = "/api/v1/customer/jobs"
CONTRACT_FIELDS = {"id", "kind", "machine_id", "tenant_id", "status", "result", "error",
                   "created_at", "updated_at"}
T0 = datetime(2026, 3, 1, tzinfo=UTC)
INSERT = """
INSERT INTO jobs (kind, machine_id, tenant_id, status, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $5) RETURNING id
"""


@dataclass
class World:
    alice: Api  # Acme: m1, m2
    bob: Api  # Beta: m3
    acme: int
    beta: int
    jobs: dict[str, str]  # name -> job id, as the API writes it


@pytest.fixture
async def world(client, admin, accounts, db) -> World:
    alice = await accounts.customer("alice", "Acme")
    bob = await accounts.customer("bob", "Beta")
    for machine_id in ("m1", "m2", "m3"):
        await admin.machine(machine_id)
    seeds = {  # name: kind, machine, tenant, status, minutes after T0
        "a1": ("ssh_reset", "m1", alice.tenant_id, "succeeded", 1),
        "a2": ("reclaim", "m2", alice.tenant_id, "pending", 2),
        "b1": ("ssh_reset", "m3", bob.tenant_id, "failed", 3),
        "a3": ("ssh_reset", "m2", alice.tenant_id, "failed", 4),
        "p1": ("reclaim", "m3", None, "succeeded", 5),  # a forced reclaim of nobody's lease
    }
    jobs = {}
    for name, (kind, machine_id, tenant_id, status, minutes) in seeds.items():
        job_id = await db.fetchval(INSERT, kind, machine_id, tenant_id, status,
                                   T0 + timedelta(minutes=minutes))
        jobs[name] = f"job-{job_id}"
    return World(await Api.login(client, alice), await Api.login(client, bob),
                 alice.tenant_id, bob.tenant_id, jobs)


async def ids(api: Api, path: str, **params) -> list[str]:
    status, body = await api.get(path, params=params)
    assert status == 200, body
    return [item["id"] for item in body["data"]["list"]]


async def test_customer_jobs_are_the_tenants_own_newest_first(world):
    j = world.jobs
    assert await ids(world.alice, MY_JOBS) == [j["a3"], j["a2"], j["a1"]]
    assert await ids(world.bob, MY_JOBS) == [j["b1"]]


async def test_customer_job_items_have_the_contract_fields(world):
    data = await world.alice.ok("GET", f"{MY_JOBS}?page_size=1")
    assert data["total"] == 3
    item = data["list"][0]
    assert set(item) >= CONTRACT_FIELDS
    assert (item["kind"], item["machine_id"], item["tenant_id"], item["status"]) == (
        "ssh_reset", "m2", world.acme, "failed")


@pytest.mark.parametrize(("params", "expected"), [
    ({"kind": "ssh_reset"}, ["a3", "a1"]),
    ({"status": "failed"}, ["a3"]),
    ({"machine_id": "m2"}, ["a3", "a2"]),
    ({"kind": "reclaim", "status": "pending", "machine_id": "m2"}, ["a2"]),
    ({"kind": "mount_dataset"}, []),
])
async def test_customer_jobs_filter_by_kind_status_and_machine(world, params, expected):
    assert await ids(world.alice, MY_JOBS, **params) == [world.jobs[n] for n in expected]


async def test_another_tenants_machine_in_the_customer_filter_matches_nothing(world):
    status, body = await world.alice.get(MY_JOBS, params={"machine_id": "m3"})
    assert status == 200
    assert body["data"] == {"list": [], "total": 0, "page": 1, "page_size": 10}


async def test_customer_jobs_page(world):
    j = world.jobs
    first = await world.alice.ok("GET", f"{MY_JOBS}?page_size=2")
    second = await world.alice.ok("GET", f"{MY_JOBS}?page_size=2&page=2")
    assert [i["id"] for i in first["list"]] == [j["a3"], j["a2"]]
    assert [i["id"] for i in second["list"]] == [j["a1"]]
    assert (second["total"], second["page"], second["page_size"]) == (3, 2, 2)


async def test_staff_get_no_tenant_jobs_from_the_customer_list(world, admin):
    assert await ids(admin, MY_JOBS) == []  # tenant 0, the platform, owns none


async def test_admin_jobs_list_every_tenant_newest_first(world, admin):
    j = world.jobs
    assert await ids(admin, ADMIN_JOBS) == [j["p1"], j["a3"], j["b1"], j["a2"], j["a1"]]


@pytest.mark.parametrize(("params", "expected"), [
    ({"tenant_id": "acme"}, ["a3", "a2", "a1"]),
    ({"tenant_id": "beta", "kind": "ssh_reset"}, ["b1"]),
    ({"machine_id": "m3"}, ["p1", "b1"]),
    ({"status": "succeeded"}, ["p1", "a1"]),
    ({"kind": "reclaim"}, ["p1", "a2"]),
])
async def test_admin_jobs_filter_by_tenant_kind_status_and_machine(world, admin, params,
                                                                  expected):
    tenants = {"acme": world.acme, "beta": world.beta}
    params = {k: tenants.get(v, v) for k, v in params.items()}
    assert await ids(admin, ADMIN_JOBS, **params) == [world.jobs[n] for n in expected]


async def test_an_operator_lists_jobs(world, client, accounts):
    operator = await Api.login(client, await accounts.user("opal", "operator"))
    assert len(await ids(operator, ADMIN_JOBS)) == 5


async def test_a_customer_on_the_admin_job_list_sees_only_its_tenants_jobs(world):
    j = world.jobs
    # job:read is a customer permission too; the query confines it to its tenant
    assert await ids(world.alice, ADMIN_JOBS) == [j["a3"], j["a2"], j["a1"]]
    assert await ids(world.alice, ADMIN_JOBS, tenant_id=world.beta) == []


@pytest.mark.parametrize("path", [MY_JOBS, ADMIN_JOBS])
@pytest.mark.parametrize("query", [
    {"kind": "format_disk"}, {"status": "done"}, {"page": "0"}, {"page_size": "101"},
    {"page_size": "x"}, {"machine_id": "m" * 65},
])
async def test_bad_job_list_queries_are_40001(world, admin, path, query):
    status, body = await admin.get(path, params=query)
    assert (status, body["code"]) == (400, 40001)
    assert [e["field"] for e in body["data"]["errors"]] == list(query)


@pytest.mark.parametrize("tenant_id", ["-1", str(2**63), "acme"])
async def test_a_bad_tenant_filter_is_40001(world, admin, tenant_id):
    status, body = await admin.get(ADMIN_JOBS, params={"tenant_id": tenant_id})
    assert (status, body["code"]) == (400, 40001)


@pytest.mark.parametrize("path", [MY_JOBS, ADMIN_JOBS])
async def test_job_lists_need_a_token(client, path):
    status, body = await call(client, "GET", path)
    assert (status, body["code"]) == (401, 40101)
