"""Alerts (issue 4, point 5; CONTRACT.md §3): the rules fed by metrics frames (overheat,
XID, ECC, row remapping, disk), lease expiry notices, stuck reclaims, one open alert per
(machine, rule), and the admin API to list and acknowledge them."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import pytest

from api.keys import ALERTS, BUS, INGEST, PERIODIC, PG_POOL
from services.frames import ECC_MAX
from tests.helpers import Api, call, eventually

HEARTBEAT = "/api/v1/agent/heartbeat"
ALERTS_URL = "/api/v1/admin/alerts"
MACHINES = "/api/v1/admin/machines"
CONTRACT_FIELDS = {"id", "machine_id", "tenant_id", "rule", "severity", "status", "message",
                   "first_seen_at", "last_seen_at", "resolved_at", "acknowledged_by"}
HOT, COOL = 90.0, 60.0  # around the default threshold of 85 C


def gpu(index: int = 0, temp: float = COOL, **health) -> dict:
    return {"index": index, "util": 50.0, "mem_used": 100, "mem_total": 1000, "temp": temp,
            "power": 100.0, **health}


def frame(*gpus: dict, disk_used: float = 100.0, disk_total: float = 1000.0) -> dict:
    return {"ts": time.time(), "cpu_util": 10.0, "mem_used": 10, "mem_total": 64,
            "disk_used": disk_used, "disk_total": disk_total,
            "gpus": list(gpus) or [gpu(0), gpu(1)]}


def temps(*values: float) -> dict:
    return frame(*[gpu(i, t) for i, t in enumerate(values)])


class Agent:
    """A machine's agent speaking HTTP to one hub process."""

    def __init__(self, client, token: str) -> None:
        self.client = client
        self.token = token

    async def send(self, body: dict) -> list[dict]:
        """Post a frame and wait for what it triggers (Redis, PostgreSQL, alert writes);
        returns the commands of the reply."""
        status, reply = await call(self.client, "POST", HEARTBEAT, token=self.token, json=body)
        assert status == 200, reply
        await self.client.app[INGEST].flush()
        return reply["data"]["commands"]

    async def job_update(self, job_id: str, body: dict) -> tuple[int, dict]:
        return await call(self.client, "POST", f"/api/v1/agent/jobs/{job_id}",
                          token=self.token, json=body)


async def _leading(client) -> None:
    """Frames are evaluated by the liveness leader: wait until this process is it."""
    await eventually(lambda: client.app[PERIODIC]["liveness"].leading, what="leading")


async def _agent(client, admin, machine_id: str = "m1") -> Agent:
    token = (await admin.machine(machine_id, gpu_count=2))["agent_token"]
    await _leading(client)
    return Agent(client, token)


@pytest.fixture
async def agent(client, admin) -> Agent:
    return await _agent(client, admin)


async def _alerts(db, rule: str | None = None, machine_id: str = "m1"):
    query = "SELECT * FROM alerts WHERE machine_id = $1"
    args: list = [machine_id]
    if rule is not None:
        query += " AND rule = $2"
        args.append(rule)
    return await db.fetch(query + " ORDER BY id", *args)


async def _open(db, rule: str, machine_id: str = "m1"):
    rows = [a for a in await _alerts(db, rule, machine_id) if a["status"] != "resolved"]
    assert len(rows) <= 1
    return rows[0] if rows else None


async def _more_runs(job, runs: int) -> None:
    target = job.runs + runs
    await eventually(lambda: job.runs >= target, what=f"{runs} more runs of {job.name}")


# --- GPU overheating ------------------------------------------------------------------------

async def test_overheat_is_raised_only_after_the_configured_consecutive_hot_samples(agent,
                                                                                    db):
    for _ in range(2):
        await agent.send(temps(HOT, COOL))
        assert await _alerts(db) == []
    await agent.send(temps(HOT, COOL))
    [alert] = await _alerts(db)
    assert (alert["rule"], alert["severity"], alert["status"]) == (
        "gpu_overheat", "warning", "active")
    assert alert["details"] == {"gpus": {"0": HOT}}
    assert "GPU 0" in alert["message"]


async def test_a_cool_sample_in_between_resets_the_overheat_count(agent, db):
    for temp in (HOT, HOT, COOL, HOT, HOT):
        await agent.send(temps(temp, COOL))
    assert await _alerts(db) == []
    await agent.send(temps(HOT, COOL))
    assert [a["rule"] for a in await _alerts(db)] == ["gpu_overheat"]


async def test_a_temperature_at_the_threshold_is_not_overheating(agent, db):
    for _ in range(5):
        await agent.send(temps(85.0, 85.0))
    assert await _alerts(db) == []


async def test_hot_samples_on_different_gpus_do_not_add_up(agent, db):
    for values in ((HOT, COOL), (COOL, HOT), (HOT, COOL), (COOL, HOT)):
        await agent.send(temps(*values))
    assert await _alerts(db) == []


async def test_overheat_threshold_and_sample_count_are_settings(make_app, aiohttp_client,
                                                               accounts, db):
    client = await aiohttp_client(make_app(alert_gpu_temp_c=70.0, alert_gpu_temp_samples=1))
    admin = await Api.login(client, await accounts.user("root-admin"))
    agent = await _agent(client, admin)
    await agent.send(temps(70.0, COOL))
    assert await _alerts(db) == []
    await agent.send(temps(71.0, COOL))
    assert [a["rule"] for a in await _alerts(db)] == ["gpu_overheat"]


async def test_a_persisting_overheat_keeps_one_open_alert(agent, db):
    for _ in range(8):
        await agent.send(temps(HOT, HOT))
    [alert] = await _alerts(db)
    assert alert["details"] == {"gpus": {"0": HOT, "1": HOT}}


async def test_overheat_resolves_only_when_every_gpu_is_back_below(agent, db):
    for _ in range(3):
        await agent.send(temps(HOT, COOL))
    await agent.send(temps(COOL, HOT))  # GPU 1 is hot now (one sample)
    assert (await _open(db, "gpu_overheat"))["status"] == "active"
    await agent.send(temps(COOL, COOL))
    [alert] = await _alerts(db)
    assert alert["status"] == "resolved" and alert["resolved_at"] is not None


async def test_overheat_after_a_resolved_one_opens_a_new_alert(agent, db):
    for values in [(HOT, COOL)] * 3 + [(COOL, COOL)] + [(HOT, COOL)] * 3:
        await agent.send(temps(*values))
    assert [a["status"] for a in await _alerts(db, "gpu_overheat")] == ["resolved", "active"]


# --- disk -----------------------------------------------------------------------------------

async def test_disk_above_the_threshold_raises_disk_full_and_below_resolves_it(agent, db):
    await agent.send(frame(disk_used=950, disk_total=1000))
    [alert] = await _alerts(db)
    assert (alert["rule"], alert["severity"], alert["status"]) == (
        "disk_full", "warning", "active")
    assert alert["details"] == {"disk_used": 950, "disk_total": 1000}
    assert "95.0%" in alert["message"]
    await agent.send(frame(disk_used=500, disk_total=1000))
    [alert] = await _alerts(db)
    assert alert["status"] == "resolved" and alert["resolved_at"] is not None


async def test_a_disk_exactly_at_the_threshold_is_not_full(agent, db):
    await agent.send(frame(disk_used=900, disk_total=1000))
    assert await _alerts(db) == []


async def test_disk_threshold_is_a_setting(make_app, aiohttp_client, accounts, db):
    client = await aiohttp_client(make_app(alert_disk_pct=50.0))
    admin = await Api.login(client, await accounts.user("root-admin"))
    agent = await _agent(client, admin)
    await agent.send(frame(disk_used=600, disk_total=1000))
    assert [a["rule"] for a in await _alerts(db)] == ["disk_full"]


# --- GPU health -----------------------------------------------------------------------------

async def test_frames_without_health_fields_raise_no_health_alert(agent, db):
    for _ in range(3):
        await agent.send(frame(gpu(0, xid_errors=0, ecc_dbe=0, remapped_rows_pending=False),
                               gpu(1)))
    assert await _alerts(db) == []


async def test_xid_errors_raise_a_critical_gpu_xid_alert(agent, db):
    await agent.send(frame(gpu(0), gpu(1, xid_errors=3)))
    [alert] = await _alerts(db)
    assert (alert["rule"], alert["severity"], alert["status"]) == (
        "gpu_xid", "critical", "active")
    assert alert["details"] == {"xid_errors": {"1": 3}}
    assert "GPU 1" in alert["message"]


async def test_further_xid_errors_refresh_the_open_alert(agent, db):
    await agent.send(frame(gpu(0, xid_errors=1), gpu(1)))
    [first] = await _alerts(db)
    await agent.send(frame(gpu(0), gpu(1)))  # no errors in this frame: nothing changes
    assert (await _alerts(db))[0]["last_seen_at"] == first["last_seen_at"]
    await agent.send(frame(gpu(0, xid_errors=2), gpu(1)))
    [again] = await _alerts(db)
    assert again["id"] == first["id"]
    assert again["last_seen_at"] > first["last_seen_at"]
    assert again["first_seen_at"] == first["first_seen_at"]


async def test_ecc_alert_only_when_the_double_bit_count_grows(agent, db):
    await agent.send(frame(gpu(0, ecc_dbe=0), gpu(1)))
    assert await _alerts(db) == []
    await agent.send(frame(gpu(0, ecc_dbe=2), gpu(1)))
    [first] = await _alerts(db)
    assert (first["rule"], first["severity"], first["details"]) == (
        "gpu_ecc", "critical", {"ecc_dbe": {"0": 2}})
    for _ in range(3):  # the cumulative count stays at 2: no new error
        await agent.send(frame(gpu(0, ecc_dbe=2), gpu(1)))
    [same] = await _alerts(db)
    assert (same["id"], same["last_seen_at"]) == (first["id"], first["last_seen_at"])
    await agent.send(frame(gpu(0, ecc_dbe=5), gpu(1)))
    [grown] = await _alerts(db)
    assert grown["id"] == first["id"]
    assert grown["last_seen_at"] > first["last_seen_at"]
    assert grown["details"] == {"ecc_dbe": {"0": 5}}


async def test_the_largest_ecc_count_an_agent_may_send_raises_its_alert(agent, db):
    await agent.send(frame(gpu(0, ecc_dbe=ECC_MAX), gpu(1)))
    [alert] = await _alerts(db)
    assert (alert["rule"], alert["details"]) == ("gpu_ecc", {"ecc_dbe": {"0": ECC_MAX}})


async def test_remapped_rows_pending_raises_until_it_clears(agent, db):
    await agent.send(frame(gpu(0), gpu(1, remapped_rows_pending=True)))
    [alert] = await _alerts(db)
    assert (alert["rule"], alert["severity"], alert["status"]) == (
        "gpu_remapped_rows", "warning", "active")
    assert alert["details"] == {"gpus": [1]}
    await agent.send(frame(gpu(0), gpu(1)))  # the field is optional: absence says nothing
    assert (await _open(db, "gpu_remapped_rows")) is not None
    await agent.send(frame(gpu(0), gpu(1, remapped_rows_pending=False)))
    [alert] = await _alerts(db)
    assert alert["status"] == "resolved" and alert["resolved_at"] is not None


@pytest.fixture
async def quiet(make_app, aiohttp_client, accounts):
    """A hub whose XID/ECC alerts resolve after 0.5 s without new errors."""
    client = await aiohttp_client(make_app(alert_quiet_s=0.5, lease_check_interval_s=0.1))
    admin = await Api.login(client, await accounts.user("root-admin"))
    return client, await _agent(client, admin)


async def test_event_alerts_resolve_after_the_quiet_period_but_state_alerts_do_not(quiet, db):
    _, agent = quiet
    await agent.send(frame(gpu(0, xid_errors=1, ecc_dbe=1), gpu(1),
                           disk_used=990, disk_total=1000))
    assert sorted(a["rule"] for a in await _alerts(db)) == ["disk_full", "gpu_ecc", "gpu_xid"]

    async def events_resolved():
        return [await _open(db, rule) for rule in ("gpu_xid", "gpu_ecc")] == [None, None]

    await eventually(events_resolved, what="XID and ECC alerts resolved")
    for rule in ("gpu_xid", "gpu_ecc"):
        [alert] = await _alerts(db, rule)
        assert (alert["resolved_at"] - alert["last_seen_at"]).total_seconds() >= 0.5
    assert (await _open(db, "disk_full"))["status"] == "active"


async def test_a_constant_ecc_count_after_resolution_does_not_raise_again(quiet, db):
    client, agent = quiet
    await agent.send(frame(gpu(0, ecc_dbe=2), gpu(1)))

    async def resolved():
        return (await _open(db, "gpu_ecc")) is None

    await eventually(resolved, what="ECC alert resolved")
    await agent.send(frame(gpu(0, ecc_dbe=2), gpu(1)))
    assert [a["status"] for a in await _alerts(db, "gpu_ecc")] == ["resolved"]
    await agent.send(frame(gpu(0, ecc_dbe=3), gpu(1)))
    assert [a["status"] for a in await _alerts(db, "gpu_ecc")] == ["resolved", "active"]
    assert client.app[PERIODIC]["lease_expiry"].runs > 0


async def test_an_ecc_count_already_seen_before_a_hub_restart_does_not_raise_again(
        make_app, aiohttp_client, accounts, db):
    before = await aiohttp_client(make_app())
    admin = await Api.login(before, await accounts.user("root-admin"))
    agent = await _agent(before, admin)
    await agent.send(frame(gpu(0, ecc_dbe=2), gpu(1)))
    assert await before.app[ALERTS].resolve("m1", "gpu_ecc")  # e.g. after the quiet period
    await before.close()
    after = await aiohttp_client(make_app())
    await _leading(after)
    await Agent(after, agent.token).send(frame(gpu(0, ecc_dbe=2), gpu(1)))
    assert [a["status"] for a in await _alerts(db, "gpu_ecc")] == ["resolved"]


async def test_frames_received_by_another_process_are_evaluated_by_the_leader(
        make_app, aiohttp_client, accounts, db):
    first = await aiohttp_client(make_app(redis_flush_s=0.02))
    second = await aiohttp_client(make_app(redis_flush_s=0.02))

    def one_leads():
        return first.app[PERIODIC]["liveness"].leading != second.app[PERIODIC][
            "liveness"].leading

    await eventually(one_leads, what="one leader")
    leader, follower = (first, second) if first.app[PERIODIC]["liveness"].leading else (
        second, first)
    admin = await Api.login(follower, await accounts.user("root-admin"))
    token = (await admin.machine("m1", gpu_count=2))["agent_token"]
    # telemetry is published only once the follower has counted a listening peer
    await eventually(lambda: follower.app[BUS].peers == 1, what="follower sees the leader")
    await Agent(follower, token).send(frame(disk_used=990, disk_total=1000))

    async def raised():
        return await _alerts(db, "disk_full")

    await eventually(raised, what="disk_full raised by the leader")
    await leader.app[INGEST].drain()  # the follower's own follow-ups ended with its flush
    assert len(await _alerts(db)) == 1


# --- one open alert per (machine, rule) -------------------------------------------------------

async def test_concurrent_raises_keep_one_open_alert_per_machine_and_rule(client, admin, db):
    await admin.machine("m1")
    alerts = client.app[ALERTS]
    created = await asyncio.gather(*[alerts.raise_("m1", "disk_full", f"try {i}")
                                     for i in range(20)])
    assert sorted(created) == [False] * 19 + [True]
    assert len(await _alerts(db)) == 1


async def test_two_processes_raising_at_once_keep_one_alert(make_app, aiohttp_client, admin,
                                                            client, db):
    await admin.machine("m1")
    other = await aiohttp_client(make_app())
    created = await asyncio.gather(*[
        app[ALERTS].raise_("m1", "gpu_xid", "xid")
        for _ in range(10) for app in (client.app, other.app)])
    assert created.count(True) == 1
    assert len(await _alerts(db)) == 1


async def test_raising_an_open_alert_again_only_refreshes_it(client, admin, db):
    await admin.machine("m1")
    alerts = client.app[ALERTS]
    assert await alerts.raise_("m1", "disk_full", "disk 91% full", {"pct": 91})
    [first] = await _alerts(db)
    assert not await alerts.raise_("m1", "disk_full", "disk 97% full", {"pct": 97})
    [again] = await _alerts(db)
    assert (again["id"], again["first_seen_at"]) == (first["id"], first["first_seen_at"])
    assert again["last_seen_at"] > first["last_seen_at"]
    assert (again["message"], again["details"]) == ("disk 97% full", {"pct": 97})


async def test_the_same_rule_on_another_machine_is_a_separate_alert(client, admin, db):
    await admin.machine("m1")
    await admin.machine("m2")
    alerts = client.app[ALERTS]
    assert await alerts.raise_("m1", "disk_full", "full")
    assert await alerts.raise_("m2", "disk_full", "full")
    assert await alerts.raise_("m1", "gpu_xid", "xid")
    assert await db.fetchval("SELECT count(*) FROM alerts WHERE status = 'active'") == 3


async def test_raising_for_an_unknown_machine_stores_nothing(client, db):
    assert not await client.app[ALERTS].raise_("ghost", "disk_full", "full")
    assert await db.fetchval("SELECT count(*) FROM alerts") == 0


async def test_resolving_when_nothing_is_open_changes_nothing(client, admin, db):
    await admin.machine("m1")
    assert not await client.app[ALERTS].resolve("m1", "disk_full")
    assert await db.fetchval("SELECT count(*) FROM alerts") == 0


# --- lease_expiring -------------------------------------------------------------------------

async def _expiring_lease(admin, db, tenant: int, machine_id: str = "m1") -> str:
    """A one-month lease that ends in 2 to 5 days."""
    start = await db.fetchval("SELECT now() + interval '5 days' - interval '1 month'")
    await admin.machine(machine_id)
    return await admin.allocate(machine_id, tenant, months=1, start_time=start.isoformat())


@pytest.fixture
async def lease_hub(make_app, aiohttp_client, accounts):
    client = await aiohttp_client(make_app(lease_check_interval_s=0.1))
    admin = await Api.login(client, await accounts.user("root-admin"))
    return client, admin, await accounts.tenant("Acme")


async def test_a_lease_ending_within_the_notice_period_raises_an_info_alert(lease_hub, db):
    client, admin, tenant = lease_hub
    allocation_id = await _expiring_lease(admin, db, tenant)
    await admin.machine("far")
    await admin.allocate("far", tenant, months=1)

    async def raised():
        return await _open(db, "lease_expiring")

    alert = await eventually(raised, what="lease_expiring raised")
    assert (alert["severity"], alert["status"], alert["tenant_id"]) == (
        "info", "active", tenant)
    assert alert["details"]["allocation_id"] == allocation_id
    assert allocation_id in alert["message"]
    await _more_runs(client.app[PERIODIC]["lease_expiry"], 3)
    assert len(await _alerts(db, "lease_expiring")) == 1
    assert await _alerts(db, machine_id="far") == []


async def test_a_lease_outside_a_shorter_notice_period_raises_nothing(make_app, aiohttp_client,
                                                                     accounts, db):
    client = await aiohttp_client(make_app(lease_check_interval_s=0.1, lease_notice_days=1))
    admin = await Api.login(client, await accounts.user("root-admin"))
    await _expiring_lease(admin, db, await accounts.tenant("Acme"))
    await _more_runs(client.app[PERIODIC]["lease_expiry"], 3)
    assert await db.fetchval("SELECT count(*) FROM alerts") == 0


async def test_renewing_past_the_notice_period_resolves_lease_expiring(lease_hub, db):
    _, admin, tenant = lease_hub
    allocation_id = await _expiring_lease(admin, db, tenant)
    await eventually(lambda: _open(db, "lease_expiring"), what="lease_expiring raised")
    await admin.ok("POST", f"/api/v1/admin/allocations/{allocation_id}/renew",
                   {"duration_months": 3})

    async def resolved():
        return (await _open(db, "lease_expiring")) is None

    await eventually(resolved, what="lease_expiring resolved")
    [alert] = await _alerts(db, "lease_expiring")
    assert alert["resolved_at"] is not None


async def test_a_force_reclaim_resolves_lease_expiring(lease_hub, db):
    _, admin, tenant = lease_hub
    await _expiring_lease(admin, db, tenant)
    await eventually(lambda: _open(db, "lease_expiring"), what="lease_expiring raised")
    await admin.ok("POST", f"{MACHINES}/m1/reclaim", {"reason": "done", "force": True})
    [alert] = await _alerts(db, "lease_expiring")
    assert alert["status"] == "resolved"


async def test_a_lease_being_reclaimed_is_no_longer_expiring(lease_hub, db):
    _, admin, tenant = lease_hub
    await _expiring_lease(admin, db, tenant)
    await eventually(lambda: _open(db, "lease_expiring"), what="lease_expiring raised")
    await admin.ok("POST", f"{MACHINES}/m1/reclaim", {"reason": "not renewing"})

    async def resolved():
        return (await _open(db, "lease_expiring")) is None

    await eventually(resolved, what="lease_expiring resolved")


# --- reclaim_stuck --------------------------------------------------------------------------

@pytest.fixture
async def reclaim_hub(make_app, aiohttp_client, accounts):
    """A hub whose agent jobs time out after 0.5 s (checked every 0.2 s)."""
    client = await aiohttp_client(make_app(job_timeout_s=0.5, monitor_interval_s=0.2))
    admin = await Api.login(client, await accounts.user("root-admin"))
    agent = await _agent(client, admin)
    await admin.allocate("m1", await accounts.tenant("Acme"))
    return client, admin, agent


async def _reclaim_sent(admin, agent) -> str:
    job_id = (await admin.ok("POST", f"{MACHINES}/m1/reclaim", {"reason": "overdue"}))["task_id"]
    commands = await agent.send(frame())
    assert [(c["job_id"], c["action"]) for c in commands] == [(job_id, "reclaim")]
    return job_id


async def test_a_reclaim_the_agent_never_answers_times_out_and_raises_reclaim_stuck(
        reclaim_hub, db):
    _, admin, agent = reclaim_hub
    job_id = await _reclaim_sent(admin, agent)

    async def timed_out():
        return (await admin.ok("GET", f"/api/v1/jobs/{job_id}"))["status"] == "timeout"

    await eventually(timed_out, what="job timeout")
    assert await db.fetchval("SELECT status FROM allocations") == "reclaiming"
    assert await db.fetchval("SELECT allocation_status FROM machines") == "maintenance"
    alert = await eventually(lambda: _open(db, "reclaim_stuck"), what="reclaim_stuck")
    assert (alert["severity"], alert["status"], alert["details"]) == (
        "critical", "active", {"job_id": job_id})
    assert job_id in alert["message"]


async def test_a_force_reclaim_resolves_reclaim_stuck(reclaim_hub, db):
    _, admin, agent = reclaim_hub
    await _reclaim_sent(admin, agent)
    await eventually(lambda: _open(db, "reclaim_stuck"), what="reclaim_stuck")
    await admin.ok("POST", f"{MACHINES}/m1/reclaim", {"reason": "agent gone", "force": True})
    [alert] = await _alerts(db, "reclaim_stuck")
    assert alert["status"] == "resolved" and alert["resolved_at"] is not None
    assert await db.fetchval("SELECT allocation_status FROM machines") == "idle"


async def test_a_reclaim_the_agent_reports_failed_raises_reclaim_stuck(reclaim_hub, db):
    _, admin, agent = reclaim_hub
    job_id = await _reclaim_sent(admin, agent)
    for _ in range(2):  # agents retry: repeating the outcome raises nothing new
        status, body = await agent.job_update(job_id, {"status": "failed",
                                                       "error": "disk busy"})
        assert (status, body["data"]["status"]) == (200, "failed")
    [alert] = await _alerts(db, "reclaim_stuck")
    assert alert["status"] == "active"
    assert "disk busy" in alert["message"]
    assert await db.fetchval("SELECT status FROM allocations") == "reclaiming"


async def test_a_successful_reclaim_raises_no_reclaim_stuck(reclaim_hub, db):
    _, admin, agent = reclaim_hub
    job_id = await _reclaim_sent(admin, agent)
    status, _ = await agent.job_update(job_id, {"status": "succeeded"})
    assert status == 200
    await _more_runs(agent.client.app[PERIODIC]["job_timeouts"], 5)
    assert (await admin.ok("GET", f"/api/v1/jobs/{job_id}"))["status"] == "succeeded"
    assert await _alerts(db, "reclaim_stuck") == []


async def test_a_timed_out_ssh_reset_raises_no_reclaim_stuck(reclaim_hub, accounts, db):
    client, admin, agent = reclaim_hub
    tenant = await db.fetchval("SELECT tenant_id FROM machines WHERE id = 'm1'")
    customer = await Api.login(client, await accounts.user("carol", "customer",
                                                           tenant_id=tenant))
    job_id = (await customer.ok("POST", "/api/v1/customer/machines/m1/ssh-reset", {}))["job_id"]
    assert [c["job_id"] for c in await agent.send(frame())] == [job_id]

    async def timed_out():
        return (await admin.ok("GET", f"/api/v1/jobs/{job_id}"))["status"] == "timeout"

    await eventually(timed_out, what="ssh reset timeout")
    await _more_runs(client.app[PERIODIC]["job_timeouts"], 2)
    assert await _alerts(db) == []


async def test_a_reclaim_not_yet_sent_to_the_agent_does_not_time_out(reclaim_hub, db):
    client, admin, _ = reclaim_hub
    job_id = (await admin.ok("POST", f"{MACHINES}/m1/reclaim", {"reason": "x"}))["task_id"]
    started = time.monotonic()
    job = client.app[PERIODIC]["job_timeouts"]
    await eventually(lambda: time.monotonic() - started > 1.0, what="past the job timeout")
    await _more_runs(job, 2)
    assert (await admin.ok("GET", f"/api/v1/jobs/{job_id}"))["status"] == "pending"
    assert await _alerts(db, "reclaim_stuck") == []


# --- the API --------------------------------------------------------------------------------

async def _seed(client, admin) -> dict[str, str]:
    """Three alerts raised in order (m1 disk, m2 xid, m1 lease); returns rule -> public id."""
    for machine_id in ("m1", "m2"):
        await admin.machine(machine_id)
    alerts = client.app[ALERTS]
    await alerts.raise_("m1", "disk_full", "disk full")
    await alerts.raise_("m2", "gpu_xid", "xid")
    await alerts.raise_("m1", "lease_expiring", "lease ends")
    return {row["rule"]: f"alert-{row['id']}" for row in
            await client.app[PG_POOL].fetch("SELECT id, rule FROM alerts")}


async def test_alert_list_defaults_to_open_newest_seen_first_with_contract_fields(client,
                                                                                  admin):
    ids = await _seed(client, admin)
    data = await admin.ok("GET", ALERTS_URL)
    assert [a["id"] for a in data["list"]] == [ids["lease_expiring"], ids["gpu_xid"],
                                               ids["disk_full"]]
    assert (data["total"], data["page"], data["page_size"]) == (3, 1, 10)
    item = data["list"][0]
    assert set(item) >= CONTRACT_FIELDS
    assert (item["machine_id"], item["rule"], item["severity"], item["status"],
            item["message"], item["resolved_at"], item["acknowledged_by"], item["tenant_id"]) \
        == ("m1", "lease_expiring", "info", "active", "lease ends", None, None, None)
    for field in ("first_seen_at", "last_seen_at"):
        assert item[field].endswith("Z")
        datetime.fromisoformat(item[field])
    # seeing the oldest again moves it to the top
    await client.app[ALERTS].raise_("m1", "disk_full", "disk still full")
    data = await admin.ok("GET", ALERTS_URL)
    assert [a["id"] for a in data["list"]] == [ids["disk_full"], ids["lease_expiring"],
                                               ids["gpu_xid"]]


async def test_alert_list_filters_by_status_severity_and_machine(client, admin):
    ids = await _seed(client, admin)
    await client.app[ALERTS].resolve("m2", "gpu_xid")
    await admin.ok("POST", f"{ALERTS_URL}/{ids['disk_full']}/ack")

    async def listed(query: str) -> list[str]:
        return [a["id"] for a in (await admin.ok("GET", f"{ALERTS_URL}?{query}"))["list"]]

    assert await listed("status=open") == [ids["lease_expiring"], ids["disk_full"]]
    assert await listed("status=active") == [ids["lease_expiring"]]
    assert await listed("status=acknowledged") == [ids["disk_full"]]
    assert await listed("status=resolved") == [ids["gpu_xid"]]
    assert await listed("severity=info") == [ids["lease_expiring"]]
    assert await listed("severity=critical") == []
    assert await listed("status=resolved&severity=critical") == [ids["gpu_xid"]]
    assert await listed("machine_id=m2") == []
    assert await listed("machine_id=m2&status=resolved") == [ids["gpu_xid"]]
    assert await listed("machine_id=ghost") == []


async def test_alert_list_pages(client, admin):
    await admin.machine("m1")
    rules = ["machine_offline", "gpu_overheat", "gpu_xid", "gpu_ecc", "disk_full"]
    for rule in rules:
        await client.app[ALERTS].raise_("m1", rule, rule)
    first = await admin.ok("GET", f"{ALERTS_URL}?page_size=2")
    second = await admin.ok("GET", f"{ALERTS_URL}?page_size=2&page=2")
    third = await admin.ok("GET", f"{ALERTS_URL}?page_size=2&page=3")
    beyond = await admin.ok("GET", f"{ALERTS_URL}?page_size=2&page=4")
    assert [a["rule"] for page in (first, second, third) for a in page["list"]] == rules[::-1]
    assert [page["total"] for page in (first, second, third, beyond)] == [5] * 4
    assert (beyond["list"], beyond["page"], beyond["page_size"]) == ([], 4, 2)


@pytest.mark.parametrize("query", ["status=closed", "severity=fatal", "page=0", "page_size=0",
                                   "page_size=101", "machine_id=" + "x" * 65])
async def test_bad_alert_list_queries_are_40001(admin, query):
    status, body = await admin.get(f"{ALERTS_URL}?{query}")
    assert (status, body["code"]) == (400, 40001)
    assert body["data"]["errors"][0]["field"] == query.split("=")[0]


async def test_ack_marks_the_alert_acknowledged_by_the_admin(client, admin):
    ids = await _seed(client, admin)
    item = await admin.ok("POST", f"{ALERTS_URL}/{ids['disk_full']}/ack")
    assert (item["id"], item["status"], item["acknowledged_by"], item["resolved_at"]) == (
        ids["disk_full"], "acknowledged", "root-admin", None)
    assert set(item) >= CONTRACT_FIELDS
    listed = (await admin.ok("GET", f"{ALERTS_URL}?status=acknowledged"))["list"]
    assert [(a["id"], a["acknowledged_by"]) for a in listed] == [(ids["disk_full"],
                                                                 "root-admin")]
    active = (await admin.ok("GET", f"{ALERTS_URL}?status=active"))["list"]
    assert ids["disk_full"] not in [a["id"] for a in active]


async def test_acknowledging_twice_is_harmless(client, admin, accounts):
    ids = await _seed(client, admin)
    first = await admin.ok("POST", f"{ALERTS_URL}/{ids['gpu_xid']}/ack")
    other = await Api.login(client, await accounts.user("other-admin"))
    again = await other.ok("POST", f"{ALERTS_URL}/{ids['gpu_xid']}/ack")
    assert again == first  # the first acknowledgement stands


async def test_acknowledging_a_resolved_alert_is_40901(client, admin):
    ids = await _seed(client, admin)
    await client.app[ALERTS].resolve("m2", "gpu_xid")
    status, body = await admin.post(f"{ALERTS_URL}/{ids['gpu_xid']}/ack")
    assert (status, body["code"], body["data"]) == (409, 40901, {"status": "resolved"})


@pytest.mark.parametrize("bad_id", ["alert-999", "alert-x", "999", "job-1", "alert-01",
                                    "alert-99999999999999999999"])
async def test_acknowledging_an_unknown_or_malformed_id_is_40401(client, admin, bad_id):
    await _seed(client, admin)
    status, body = await admin.post(f"{ALERTS_URL}/{bad_id}/ack")
    assert (status, body["code"]) == (404, 40401)


async def test_an_acknowledged_alert_still_resolves_when_its_condition_clears(agent, admin,
                                                                              db):
    await agent.send(frame(disk_used=990, disk_total=1000))
    alert = await _open(db, "disk_full")
    await admin.ok("POST", f"{ALERTS_URL}/alert-{alert['id']}/ack")
    await agent.send(frame(disk_used=990, disk_total=1000))  # still full: stays acknowledged
    assert (await _open(db, "disk_full"))["status"] == "acknowledged"
    await agent.send(frame(disk_used=100, disk_total=1000))
    [alert] = await _alerts(db, "disk_full")
    assert (alert["status"], alert["resolved_at"] is not None) == ("resolved", True)
    listed = (await admin.ok("GET", f"{ALERTS_URL}?status=resolved"))["list"]
    assert [(a["status"], a["acknowledged_by"]) for a in listed] == [("resolved", "root-admin")]


async def test_an_acknowledged_alert_raised_again_stays_acknowledged(client, admin, db):
    ids = await _seed(client, admin)
    await admin.ok("POST", f"{ALERTS_URL}/{ids['disk_full']}/ack")
    assert not await client.app[ALERTS].raise_("m1", "disk_full", "fuller")
    assert (await _open(db, "disk_full"))["status"] == "acknowledged"


async def test_alert_of_a_leased_machine_carries_its_tenant(client, admin, accounts):
    tenant = await accounts.tenant("Acme")
    await admin.machine("m1")
    await admin.allocate("m1", tenant)
    await client.app[ALERTS].raise_("m1", "disk_full", "full")
    [item] = (await admin.ok("GET", ALERTS_URL))["list"]
    assert item["tenant_id"] == tenant


async def test_alert_list_by_default_shows_what_the_dashboard_counts_as_active(client, admin):
    ids = await _seed(client, admin)
    await admin.ok("POST", f"{ALERTS_URL}/{ids['disk_full']}/ack")
    await client.app[ALERTS].resolve("m2", "gpu_xid")
    listed = await admin.ok("GET", ALERTS_URL)
    stats = await admin.ok("GET", "/api/v1/admin/dashboard/stats")
    assert [a["id"] for a in listed["list"]] == [ids["lease_expiring"], ids["disk_full"]]
    assert listed["total"] == stats["active_alerts"] == 2


async def test_dashboard_counts_acknowledged_alerts_as_active(client, admin):
    ids = await _seed(client, admin)
    await admin.ok("POST", f"{ALERTS_URL}/{ids['disk_full']}/ack")
    await client.app[ALERTS].resolve("m2", "gpu_xid")
    stats = await admin.ok("GET", "/api/v1/admin/dashboard/stats")
    assert stats["active_alerts"] == 2


async def test_an_operator_can_read_and_acknowledge_alerts(client, admin, accounts):
    ids = await _seed(client, admin)
    operator = await Api.login(client, await accounts.user("ops-olga", "operator"))
    assert (await operator.ok("GET", ALERTS_URL))["total"] == 3
    item = await operator.ok("POST", f"{ALERTS_URL}/{ids['gpu_xid']}/ack")
    assert (item["status"], item["acknowledged_by"]) == ("acknowledged", "ops-olga")


async def test_a_customer_cannot_read_or_acknowledge_alerts(client, admin, accounts, db):
    ids = await _seed(client, admin)
    customer = await Api.login(client, await accounts.customer("carol", "Carol Co"))
    status, body = await customer.get(ALERTS_URL)
    assert (status, body["code"]) == (403, 40301)
    status, body = await customer.post(f"{ALERTS_URL}/{ids['gpu_xid']}/ack")
    assert (status, body["code"]) == (403, 40301)
    assert await db.fetchval("SELECT count(*) FROM alerts WHERE status = 'acknowledged'") == 0


async def test_alerts_need_a_login(client):
    for method, path in [("GET", ALERTS_URL), ("POST", f"{ALERTS_URL}/alert-1/ack")]:
        status, body = await call(client, method, path)
        assert (status, body["code"]) == (401, 40101)


async def test_an_agent_token_cannot_read_alerts(client, agent):
    status, body = await call(client, "GET", ALERTS_URL, token=agent.token)
    assert (status, body["code"]) == (401, 40101)
