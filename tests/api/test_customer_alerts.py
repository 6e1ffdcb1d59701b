"""``/api/v1/customer/alerts`` (issue 12 point 5; CONTRACT.md §3a): the alerts raised
while the caller's tenant leased the machine, of the rules a tenant sees (offline, GPU
health, disk, lease expiring; never a stuck reclaim), paged and filtered like the admin
list, confined to the tenant in the query. Also the admin list's ``rule`` filter.

Alerts are seeded straight into the table, each with its tenant and last-seen time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from tests.helpers import Api, call

MY_ALERTS = "/api/v1/customer/alerts"
ADMIN_ALERTS = "/api/v1/admin/alerts"
T0 = datetime(2026, 3, 1, tzinfo=UTC)
INSERT = """
INSERT INTO alerts (machine_id, tenant_id, rule, severity, status, message, first_seen_at,
                    last_seen_at, resolved_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $7,
        CASE WHEN $5 = 'resolved' THEN $7::timestamptz END)
RETURNING id
"""


@dataclass
class World:
    alice: Api  # Acme: m1, m2
    bob: Api  # Beta: m3
    alerts: dict[str, str]  # name -> alert id, as the API writes it


@pytest.fixture
async def world(client, admin, accounts, db) -> World:
    alice = await accounts.customer("alice", "Acme")
    bob = await accounts.customer("bob", "Beta")
    for machine_id in ("m1", "m2", "m3"):
        await admin.machine(machine_id)
    acme, beta = alice.tenant_id, bob.tenant_id
    seeds = {  # name: machine, tenant, rule, severity, status, minutes after T0
        "offline": ("m1", acme, "machine_offline", "critical", "active", 1),
        "disk": ("m2", acme, "disk_full", "warning", "acknowledged", 2),
        "hot": ("m1", acme, "gpu_overheat", "warning", "resolved", 3),
        "stuck": ("m2", acme, "reclaim_stuck", "critical", "active", 4),
        "expiring": ("m2", acme, "lease_expiring", "info", "active", 5),
        "beta": ("m3", beta, "machine_offline", "critical", "active", 6),
        "idle": ("m3", None, "gpu_xid", "critical", "active", 7),  # no lessee then
    }
    alerts = {}
    for name, (machine_id, tenant_id, rule, severity, status, minutes) in seeds.items():
        alert_id = await db.fetchval(INSERT, machine_id, tenant_id, rule, severity, status,
                                     name, T0 + timedelta(minutes=minutes))
        alerts[name] = f"alert-{alert_id}"
    return World(await Api.login(client, alice), await Api.login(client, bob), alerts)


async def names(world: World, api: Api, path: str = MY_ALERTS, **params) -> list[str]:
    status, body = await api.get(path, params=params)
    assert status == 200, body
    by_id = {alert_id: name for name, alert_id in world.alerts.items()}
    return [by_id[item["id"]] for item in body["data"]["list"]]


async def test_customer_alerts_default_to_the_tenants_open_ones_most_recently_seen_first(
        world):
    assert await names(world, world.alice) == ["expiring", "disk", "offline"]
    assert await names(world, world.bob) == ["beta"]


async def test_a_stuck_reclaim_is_never_shown_to_the_tenant(world):
    assert "stuck" not in await names(world, world.alice, status="active")
    status, body = await world.alice.get(MY_ALERTS, params={"rule": "reclaim_stuck"})
    assert (status, body["code"]) == (400, 40001)
    assert [e["field"] for e in body["data"]["errors"]] == ["rule"]


async def test_customer_alert_items_are_the_admin_items(world, admin):
    mine = (await world.alice.ok("GET", MY_ALERTS))["list"]
    staff = (await admin.ok("GET", f"{ADMIN_ALERTS}?page_size=100"))["list"]
    by_id = {item["id"]: item for item in staff}
    assert mine == [by_id[item["id"]] for item in mine]


@pytest.mark.parametrize(("params", "expected"), [
    ({"status": "resolved"}, ["hot"]),
    ({"status": "active"}, ["expiring", "offline"]),
    ({"status": "acknowledged"}, ["disk"]),
    ({"severity": "critical"}, ["offline"]),
    ({"machine_id": "m2"}, ["expiring", "disk"]),
    ({"rule": "gpu_overheat", "status": "resolved"}, ["hot"]),
    ({"rule": "machine_offline", "machine_id": "m1", "severity": "critical"}, ["offline"]),
])
async def test_customer_alerts_filter_by_status_severity_machine_and_rule(world, params,
                                                                         expected):
    assert await names(world, world.alice, **params) == expected


async def test_another_tenants_machine_in_the_customer_filter_matches_nothing(world):
    status, body = await world.alice.get(MY_ALERTS, params={"machine_id": "m3"})
    assert status == 200
    assert body["data"] == {"list": [], "total": 0, "page": 1, "page_size": 10}


async def test_customer_alerts_page(world):
    first = await world.alice.ok("GET", f"{MY_ALERTS}?page_size=2")
    second = await world.alice.ok("GET", f"{MY_ALERTS}?page_size=2&page=2")
    assert [i["id"] for i in first["list"] + second["list"]] == [
        world.alerts[n] for n in ("expiring", "disk", "offline")]
    assert (second["total"], second["page"], second["page_size"]) == (3, 2, 2)


@pytest.mark.parametrize("query", [
    {"status": "open,resolved"}, {"severity": "fatal"}, {"rule": "cosmic_rays"},
    {"page": "0"}, {"page_size": "101"}, {"machine_id": "m" * 65},
])
async def test_bad_customer_alert_queries_are_40001(world, query):
    status, body = await world.alice.get(MY_ALERTS, params=query)
    assert (status, body["code"]) == (400, 40001)
    assert [e["field"] for e in body["data"]["errors"]] == list(query)


async def test_staff_use_the_admin_alert_list_not_the_customers(world, admin):
    status, body = await admin.get(MY_ALERTS)
    assert (status, body["code"]) == (403, 40301)


async def test_customer_alerts_need_a_token(client):
    status, body = await call(client, "GET", MY_ALERTS)
    assert (status, body["code"]) == (401, 40101)


async def test_admin_alerts_filter_by_rule_including_stuck_reclaims(world, admin):
    assert await names(world, admin, ADMIN_ALERTS, rule="reclaim_stuck") == ["stuck"]
    assert await names(world, admin, ADMIN_ALERTS, rule="machine_offline") == [
        "beta", "offline"]
