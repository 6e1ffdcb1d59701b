"""CONTRACT.md §2 role table, ``operator``: platform staff created by an admin through
``POST /api/v1/admin/users``, reading everything staff reads, operating machines, alerts
and leases (``allocation:write`` is in its row), and refused (40301) on users and on
customer management."""

from __future__ import annotations

import pytest

from api.keys import ALERTS
from tests.helpers import PASSWORD, Account, Api, call

USERS = "/api/v1/admin/users"
CUSTOMERS = "/api/v1/admin/customers"


@pytest.fixture
async def world(client, admin, accounts):
    """An operator created over the API, a customer holding one leased machine, an idle
    machine and an open alert."""
    item = await admin.ok("POST", USERS, {"username": "olga", "password": PASSWORD,
                                          "role": "operator"})
    operator = await Api.login(client, Account(item["id"], "olga", 0, "operator"))
    alice = await accounts.customer("alice", "Acme Corp")
    await admin.machine("m1")
    await admin.machine("m2")
    allocation_id = await admin.allocate("m1", alice.tenant_id)
    await client.app[ALERTS].raise_("m2", "disk_full", "disk full")
    return {"operator": operator, "admin": admin, "tenant_id": alice.tenant_id,
            "allocation_id": allocation_id, "user_id": item["id"]}


READS = [
    "/api/v1/admin/machines", "/api/v1/admin/machines/m1", "/api/v1/admin/allocations",
    "/api/v1/admin/allocations/recent", CUSTOMERS, "/api/v1/admin/dashboard/stats",
    "/api/v1/admin/dashboard/gpu-trend", "/api/v1/admin/monitoring/realtime",
    "/api/v1/admin/alerts", "/api/v1/admin/audit-logs",
]


@pytest.mark.parametrize("path", READS)
async def test_operator_reads_what_an_admin_reads(world, path):
    operator, admin = world["operator"], world["admin"]
    status, body = await operator.get(path)
    assert status == 200, body
    _, expected = await admin.get(path)
    if path != "/api/v1/admin/audit-logs":  # the admin's own reads are not audited, but
        assert _stable(body["data"]) == _stable(expected["data"])  # time moves on


async def test_operator_reads_a_customers_detail(world):
    data = await world["operator"].ok("GET", f"{CUSTOMERS}/{world['tenant_id']}")
    assert (data["name"], data["machine_count"]) == ("Acme Corp", 1)
    assert [u["username"] for u in data["users"]] == ["alice"]


async def test_operator_operates_machines(world):
    operator = world["operator"]
    await operator.machine("m3")
    assert (await operator.ok("PATCH", "/api/v1/admin/machines/m3",
                              {"name": "renamed"}))["name"] == "renamed"
    await operator.ok("POST", "/api/v1/admin/machines/m3/maintenance",
                      {"enabled": True, "reason": "fan"})
    assert "agent_token" in await operator.ok("POST", "/api/v1/admin/machines/m2/agent-token")


async def test_operator_acknowledges_alerts(world):
    listed = await world["operator"].ok("GET", "/api/v1/admin/alerts")
    alert_id = listed["list"][0]["id"]
    data = await world["operator"].ok("POST", f"/api/v1/admin/alerts/{alert_id}/ack")
    assert data["status"] == "acknowledged"


async def test_operator_leases_and_renews_as_its_role_row_allows(world):
    operator = world["operator"]
    await operator.ok("POST", "/api/v1/admin/machines/m2/allocate",
                      {"tenant_id": world["tenant_id"], "duration_months": 1})
    await operator.ok("POST", f"/api/v1/admin/allocations/{world['allocation_id']}/renew",
                      {"duration_months": 1})


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", USERS, None),
    ("POST", USERS, {"username": "mallory", "password": PASSWORD, "role": "admin"}),
    ("PATCH", f"{USERS}/2", {"role": "admin"}),
    ("POST", f"{USERS}/1/disable", None),
    ("POST", f"{USERS}/2/enable", None),
    ("POST", f"{USERS}/1/reset-password", {"password": "taken-over-1"}),
    ("POST", CUSTOMERS, {"name": "New Co", "username": "newco", "password": PASSWORD}),
    ("PATCH", f"{CUSTOMERS}/{{tenant}}", {"name": "Renamed"}),
    ("POST", f"{CUSTOMERS}/{{tenant}}/disable", None),
    ("POST", f"{CUSTOMERS}/{{tenant}}/enable", None),
])
async def test_operator_is_40301_on_users_and_customer_management(world, db, method, path,
                                                                   body):
    operator = world["operator"]
    status, answer = await call(operator.client, method,
                                path.format(tenant=world["tenant_id"]), token=operator.token,
                                json=body)
    assert (status, answer["code"]) == (403, 40301)
    assert await db.fetchval("SELECT role FROM users WHERE id = $1", world["user_id"]) == \
        "operator"
    assert await db.fetchval("SELECT count(*) FROM users") == 3
    assert await db.fetchval("SELECT name FROM tenants WHERE id = $1", world["tenant_id"]) == \
        "Acme Corp"


def _stable(data):
    """A response without the values that move between two reads (times, live numbers)."""
    if isinstance(data, dict):
        return {k: _stable(v) for k, v in data.items()
                if k not in {"ts", "generated_at", "last_seen_at", "points"}}
    if isinstance(data, list):
        return [_stable(item) for item in data]
    return data
