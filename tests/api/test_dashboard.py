"""Dashboard statistics, computed by aggregate SQL."""

from __future__ import annotations

from tests.helpers import Api, call

STATS = "/api/v1/admin/dashboard/stats"


async def test_stats_of_an_empty_fleet(admin):
    data = await admin.ok("GET", STATS)
    assert data == {"total_machines": 0, "online_machines": 0, "offline_machines": 0,
                    "total_gpus": 0, "avg_gpu_utilization": None, "allocation_rate": 0.0,
                    "active_customers": 0, "active_alerts": 0}


async def test_stats_count_machines_gpus_leases_customers_and_alerts(admin, accounts, db):
    acme, beta = await accounts.tenant("Acme"), await accounts.tenant("Beta")
    idle = await accounts.tenant("Idle Inc")
    for i in range(6):
        await admin.machine(f"m{i}", gpu_count=i)
    await admin.allocate("m0", acme)
    await admin.allocate("m1", acme)
    await admin.allocate("m2", beta)
    await admin.ok("POST", "/api/v1/admin/machines/m2/reclaim", {"reason": "x"})
    await db.execute("UPDATE machines SET status = 'online' WHERE id IN ('m0', 'm3')")
    await db.execute("UPDATE tenants SET status = 'disabled' WHERE id = $1", idle)
    for rule, status in [("machine_offline", "active"), ("disk_full", "acknowledged"),
                         ("gpu_overheat", "resolved")]:
        await db.execute(
            "INSERT INTO alerts (machine_id, rule, severity, status, message, resolved_at) "
            "VALUES ('m4', $1, 'warning', $2::text, 'x', "
            "CASE WHEN $2::text = 'resolved' THEN now() END)", rule, status)
    data = await admin.ok("GET", STATS)
    assert data == {
        "total_machines": 6, "online_machines": 2, "offline_machines": 4,
        "total_gpus": 0 + 1 + 2 + 3 + 4 + 5,
        "avg_gpu_utilization": None,
        "allocation_rate": round(2 / 6 * 100, 1),  # m2 is being reclaimed: maintenance
        "active_customers": 2,
        "active_alerts": 2,
    }


async def test_stats_need_monitoring_read(client, accounts):
    customer = await Api.login(client, await accounts.customer())
    status, body = await call(client, "GET", STATS, token=customer.token)
    assert (status, body["code"]) == (403, 40301)
