"""CONTRACT.md §4 machine rows and `/api/v1/jobs/:id`: a customer sees and operates only
its own tenant's leased machines; everything else is simply not found (§1)."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

import pytest

from tests.helpers import Api, call

MY_MACHINES = "/api/v1/customer/machines"
MACHINES = "/api/v1/admin/machines"
ALLOCATIONS = "/api/v1/admin/allocations"
CUSTOMERS = "/api/v1/admin/customers"
JOBS = "/api/v1/jobs"
MACHINE_FIELDS = {"id", "name", "status", "gpu_util", "gpu_model", "gpu_count", "ssh_host",
                  "ssh_port", "ssh_user", "jupyter_url", "expires_at"}
CONNECTION_FIELDS = {"ssh_host", "ssh_port", "ssh_user", "ssh_command", "jupyter_url"}
JOB_FIELDS = {"id", "kind", "machine_id", "tenant_id", "status", "result", "error",
              "created_at", "updated_at"}


def _openssh_key(kind: str, payload: bytes) -> str:
    blob = len(kind).to_bytes(4, "big") + kind.encode() + len(payload).to_bytes(4, "big") \
        + payload
    return f"{kind} {base64.b64encode(blob).decode()}"


ED25519_KEY = _openssh_key("ssh-ed25519", bytes(range(32))) + " alice@laptop"
RSA_KEY = _openssh_key("ssh-rsa", bytes(range(256)))
assert ED25519_KEY.startswith("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI")


@dataclass
class World:
    alice: Api  # customer of Acme, which leases m1 and m2
    bob: Api  # customer of Beta, which leases m3
    acme: int
    beta: int


def _machine_fields(n: int) -> dict:
    return {"ssh_host": f"gpu{n}.example.com", "ssh_port": 10020 + n, "ssh_user": f"user{n}",
            "jupyter_url": f"https://jupyter.example.com/m{n}", "gpu_model": "H100",
            "gpu_count": n}


@pytest.fixture
async def world(client, admin, accounts) -> World:
    alice = await accounts.customer("alice", "Acme")
    bob = await accounts.customer("bob", "Beta")
    for n in (1, 2, 3, 4):
        await admin.machine(f"m{n}", **_machine_fields(n))
    await admin.allocate("m1", alice.tenant_id)
    await admin.allocate("m2", alice.tenant_id, months=6)
    await admin.allocate("m3", bob.tenant_id)
    # m4 stays idle
    return World(await Api.login(client, alice), await Api.login(client, bob),
                 alice.tenant_id, bob.tenant_id)


async def _ssh_reset(api: Api, machine_id: str, json=None) -> str:
    data = await api.ok("POST", f"{MY_MACHINES}/{machine_id}/ssh-reset", json)
    assert set(data) == {"job_id"}
    return data["job_id"]


# --- list ---------------------------------------------------------------------------------


async def test_customer_sees_exactly_its_tenants_leased_machines(world):
    assert [m["id"] for m in await world.alice.ok("GET", MY_MACHINES)] == ["m1", "m2"]
    assert [m["id"] for m in await world.bob.ok("GET", MY_MACHINES)] == ["m3"]


async def test_machine_items_carry_the_contract_fields(world, admin):
    items = await world.alice.ok("GET", MY_MACHINES)
    assert isinstance(items, list)
    leases = {a["machine_id"]: a for a in (await admin.ok("GET", ALLOCATIONS))["list"]}
    for item in items:
        assert set(item) >= MACHINE_FIELDS
        assert "agent_token" not in item
        n = int(item["id"][1:])
        assert item == {**item, "name": item["id"], "status": "offline", "gpu_util": None,
                        "gpu_model": "H100", "gpu_count": n, **{
                            k: v for k, v in _machine_fields(n).items()
                            if k.startswith(("ssh_", "jupyter"))}}
        assert item["expires_at"] == leases[item["id"]]["expires_at"]
        assert item["expires_at"].endswith("Z")


async def test_customer_without_machines_gets_an_empty_array(client, world, accounts):
    carol = await Api.login(client, await accounts.customer("carol", "Gamma"))
    assert await carol.ok("GET", MY_MACHINES) == []


async def test_machine_without_jupyter_url_lists_it_as_null(client, admin, accounts):
    carol = await accounts.customer("carol", "Gamma")
    await admin.machine("plain")
    await admin.allocate("plain", carol.tenant_id)
    api = await Api.login(client, carol)
    [item] = await api.ok("GET", MY_MACHINES)
    assert (item["id"], item["jupyter_url"]) == ("plain", None)
    connection = await api.ok("GET", f"{MY_MACHINES}/plain/connection")
    assert connection["jupyter_url"] is None


async def test_a_reclaimed_machine_leaves_the_list(world, admin):
    await admin.ok("POST", f"{MACHINES}/m2/reclaim", {"reason": "x", "force": True})
    assert [m["id"] for m in await world.alice.ok("GET", MY_MACHINES)] == ["m1"]


async def test_a_machine_released_and_leased_to_another_tenant_moves_with_it(world, admin):
    await admin.ok("POST", f"{MACHINES}/m2/reclaim", {"reason": "x", "force": True})
    await admin.allocate("m2", world.beta)
    assert [m["id"] for m in await world.alice.ok("GET", MY_MACHINES)] == ["m1"]
    assert [m["id"] for m in await world.bob.ok("GET", MY_MACHINES)] == ["m2", "m3"]
    status, body = await world.alice.get(f"{MY_MACHINES}/m2/connection")
    assert (status, body["code"]) == (404, 40401)


# --- connection ---------------------------------------------------------------------------


async def test_connection_returns_how_to_reach_the_machine(world):
    data = await world.alice.ok("GET", f"{MY_MACHINES}/m1/connection")
    assert set(data) >= CONNECTION_FIELDS
    assert data == {**data, "ssh_host": "gpu1.example.com", "ssh_port": 10021,
                    "ssh_user": "user1", "jupyter_url": "https://jupyter.example.com/m1",
                    "ssh_command": "ssh -p 10021 user1@gpu1.example.com"}


async def test_connection_reflects_an_admin_edit(world, admin):
    await admin.ok("PATCH", f"{MACHINES}/m2", {"ssh_host": "10.1.2.3", "ssh_port": 2222,
                                               "ssh_user": "root"})
    data = await world.alice.ok("GET", f"{MY_MACHINES}/m2/connection")
    assert data["ssh_command"] == "ssh -p 2222 root@10.1.2.3"


@pytest.mark.parametrize("machine_id", ["m3", "m4", "nope", "M1", "m1%20"])
@pytest.mark.parametrize(("method", "action"), [("GET", "connection"), ("POST", "ssh-reset")])
async def test_a_machine_not_leased_to_the_caller_is_40401(world, db, machine_id, method,
                                                         action):
    status, body = await call(world.alice.client, method,
                              f"{MY_MACHINES}/{machine_id}/{action}", token=world.alice.token)
    assert (status, body["code"]) == (404, 40401)
    assert body["data"] is None
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0


async def test_another_tenants_machine_looks_exactly_like_an_unknown_one(world):
    _, foreign = await world.alice.get(f"{MY_MACHINES}/m3/connection")
    _, unknown = await world.alice.get(f"{MY_MACHINES}/nope/connection")
    assert {k: v for k, v in foreign.items() if k != "traceId"} == \
        {k: v for k, v in unknown.items() if k != "traceId"}


# --- ssh reset and its job ----------------------------------------------------------------


async def test_ssh_reset_creates_a_pending_job_the_customer_can_read(world):
    job_id = await _ssh_reset(world.alice, "m1")
    assert re.fullmatch(r"job-\d+", job_id)
    job = await world.alice.ok("GET", f"{JOBS}/{job_id}")
    assert set(job) >= JOB_FIELDS
    assert (job["id"], job["kind"], job["status"], job["machine_id"], job["tenant_id"]) == \
        (job_id, "ssh_reset", "pending", "m1", world.acme)
    assert (job["result"], job["error"]) == (None, None)


async def test_ssh_reset_without_a_body_regenerates_keys(world, db):
    job_id = await _ssh_reset(world.alice, "m1")
    params = await db.fetchval("SELECT params FROM jobs WHERE id = $1", int(job_id[4:]))
    assert params == {"public_key": None}


@pytest.mark.parametrize("key", [ED25519_KEY, ED25519_KEY.rsplit(" ", 1)[0], RSA_KEY,
                                 "  " + ED25519_KEY + "\n"])
async def test_ssh_reset_accepts_an_openssh_public_key(world, db, key):
    job_id = await _ssh_reset(world.alice, "m1", {"public_key": key})
    params = await db.fetchval("SELECT params FROM jobs WHERE id = $1", int(job_id[4:]))
    assert params == {"public_key": key.strip()}


@pytest.mark.parametrize("key", [
    "garbage",
    "",
    "ssh-ed25519",
    "ssh-ed25519 not*base64!",
    "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
    ED25519_KEY + "\n" + RSA_KEY,
    "command=\"rm -rf /\" " + ED25519_KEY,
    123,
    ["ssh-ed25519"],
])
async def test_ssh_reset_with_a_bad_public_key_is_40001_and_creates_no_job(world, db, key):
    status, body = await world.alice.post(f"{MY_MACHINES}/m1/ssh-reset", {"public_key": key})
    assert (status, body["code"]) == (400, 40001)
    assert {e["field"] for e in body["data"]["errors"]} == {"public_key"}
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0


async def test_ssh_reset_on_a_machine_being_reclaimed_is_40901(world, admin, db):
    await admin.ok("POST", f"{MACHINES}/m1/reclaim", {"reason": "x"})
    status, body = await world.alice.post(f"{MY_MACHINES}/m1/ssh-reset", {})
    assert (status, body["code"]) == (409, 40901)
    assert body["data"]  # says what is in the way
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE kind = 'ssh_reset'") == 0


async def test_another_tenants_customer_cannot_read_the_job(world):
    job_id = await _ssh_reset(world.alice, "m1")
    status, body = await world.bob.get(f"{JOBS}/{job_id}")
    assert (status, body["code"]) == (404, 40401)
    _, unknown = await world.bob.get(f"{JOBS}/job-999999")
    assert {k: v for k, v in body.items() if k != "traceId"} == \
        {k: v for k, v in unknown.items() if k != "traceId"}


async def test_platform_staff_can_read_a_customers_job(client, world, admin, accounts):
    job_id = await _ssh_reset(world.alice, "m1")
    job = await admin.ok("GET", f"{JOBS}/{job_id}")
    assert (job["id"], job["kind"], job["tenant_id"]) == (job_id, "ssh_reset", world.acme)
    operator = await Api.login(client, await accounts.user("ops", "operator"))
    assert (await operator.ok("GET", f"{JOBS}/{job_id}"))["id"] == job_id


async def test_customer_can_read_the_reclaim_job_of_its_machine(world, admin):
    reclaim = await admin.ok("POST", f"{MACHINES}/m1/reclaim", {"reason": "x"})
    job = await world.alice.ok("GET", f"{JOBS}/{reclaim['task_id']}")
    assert (job["kind"], job["machine_id"]) == ("reclaim", "m1")
    status, _ = await world.bob.get(f"{JOBS}/{reclaim['task_id']}")
    assert status == 404


@pytest.mark.parametrize("job_id", ["job-abc", "12", "alloc-1", "job-", "job--1", "JOB-1",
                                    "job-1x", "job-99999999999999999999", "job-999999"])
async def test_a_malformed_or_unknown_job_id_is_40401(world, admin, job_id):
    await _ssh_reset(world.alice, "m1")  # job-1 exists
    for api in (world.alice, admin):
        status, body = await api.get(f"{JOBS}/{job_id}")
        assert (status, body["code"]) == (404, 40401)


@pytest.mark.parametrize("job_id", ["job-%EF%BC%91", "job-%D9%A1"])  # fullwidth, Arabic-Indic 1
async def test_a_job_id_with_non_ascii_digits_is_40401(world, job_id):
    await _ssh_reset(world.alice, "m1")  # job-1 exists
    status, body = await world.alice.get(f"{JOBS}/{job_id}")
    assert (status, body["code"]) == (404, 40401)


async def test_each_ssh_reset_gets_its_own_job(world):
    first = await _ssh_reset(world.alice, "m1")
    second = await _ssh_reset(world.alice, "m2")
    assert first != second
    assert (await world.alice.ok("GET", f"{JOBS}/{second}"))["machine_id"] == "m2"


# --- who may call -------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [
    ("GET", MY_MACHINES),
    ("GET", MY_MACHINES + "/m1/connection"),
    ("POST", MY_MACHINES + "/m1/ssh-reset"),
])
@pytest.mark.parametrize("role", ["admin", "operator"])
async def test_platform_staff_get_40301_on_customer_routes(client, world, accounts, db, method,
                                                           path, role):
    staff = await Api.login(client, await accounts.user(f"staff-{role}", role))
    status, body = await call(client, method, path, token=staff.token)
    assert (status, body["code"]) == (403, 40301)
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0


@pytest.mark.parametrize(("method", "path"), [
    ("GET", MY_MACHINES),
    ("GET", MY_MACHINES + "/m1/connection"),
    ("POST", MY_MACHINES + "/m1/ssh-reset"),
    ("GET", JOBS + "/job-1"),
])
async def test_a_disabled_tenants_customer_gets_40302(world, admin, db, method, path):
    await _ssh_reset(world.alice, "m2")  # job-1
    await admin.ok("POST", f"{CUSTOMERS}/{world.acme}/disable")
    status, body = await call(world.alice.client, method, path, token=world.alice.token)
    assert (status, body["code"]) == (403, 40302)
    assert await db.fetchval("SELECT count(*) FROM jobs") == 1


async def test_disabling_one_tenant_leaves_the_other_working(world, admin):
    await admin.ok("POST", f"{CUSTOMERS}/{world.acme}/disable")
    assert [m["id"] for m in await world.bob.ok("GET", MY_MACHINES)] == ["m3"]


@pytest.mark.parametrize(("method", "path"), [
    ("GET", MY_MACHINES),
    ("GET", MY_MACHINES + "/m1/connection"),
    ("POST", MY_MACHINES + "/m1/ssh-reset"),
    ("GET", JOBS + "/job-1"),
])
async def test_customer_routes_without_a_token_are_40101(client, method, path):
    status, body = await call(client, method, path)
    assert (status, body["code"]) == (401, 40101)
