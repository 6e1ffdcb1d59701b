"""Liveness (issue 4, point 4): a machine whose agent falls silent goes offline and raises
one ``machine_offline`` alert, also with two hub processes; a returning heartbeat brings it
back online and resolves the alert. Silence is measured with the hub's receive time."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import pytest

from api.keys import INGEST, PERIODIC, REDIS_KEYS, STATE
from tests.helpers import Api, call, eventually

HEARTBEAT = "/api/v1/agent/heartbeat"
TIMEOUT_S = 1.0
INTERVAL_S = 0.2
LIVE = {"monitor_interval_s": INTERVAL_S, "heartbeat_timeout_s": TIMEOUT_S}
# Generous: how long the suite waits for something that should happen after
# timeout + interval. Polls return as soon as the condition holds.
DEADLINE_S = TIMEOUT_S + INTERVAL_S + 8.0


def frame(ts: float | None = None) -> dict:
    return {"ts": time.time() if ts is None else ts, "cpu_util": 10.0, "mem_used": 10,
            "mem_total": 64, "disk_used": 10, "disk_total": 100,
            "gpus": [{"index": i, "util": 50.0, "mem_used": 100, "mem_total": 1000,
                      "temp": 50.0, "power": 100.0} for i in range(2)]}


async def _eventually(predicate, timeout_s: float = DEADLINE_S, what: str = "condition"):
    return await eventually(predicate, timeout_s, what)


async def _more_runs(job, runs: int) -> None:
    """Wait until the periodic job has run ``runs`` more times."""
    target = job.runs + runs
    await _eventually(lambda: job.runs >= target, what=f"{runs} more runs of {job.name}")


@pytest.fixture
async def client(make_app, aiohttp_client):
    """A hub with a fast liveness monitor (1 s timeout, 0.2 s scans)."""
    return await aiohttp_client(make_app(**LIVE))


async def _beat(client, token, ts: float | None = None) -> None:
    status, body = await call(client, "POST", HEARTBEAT, token=token, json=frame(ts))
    assert status == 200, body
    await client.app[INGEST].flush()


async def _status(db, machine_id: str = "m1") -> str:
    return await db.fetchval("SELECT status FROM machines WHERE id = $1", machine_id)


async def _offline_alerts(db, machine_id: str = "m1"):
    return await db.fetch("SELECT * FROM alerts WHERE machine_id = $1 AND rule = "
                          "'machine_offline' ORDER BY id", machine_id)


async def _went_offline(db, machine_id: str = "m1", timeout_s: float = DEADLINE_S) -> None:
    """Wait for the machine to be offline with its alert raised (the alert follows the
    status change)."""
    async def offline():
        return await _status(db, machine_id) == "offline" and any(
            a["status"] == "active" for a in await _offline_alerts(db, machine_id))

    await _eventually(offline, timeout_s, what=f"{machine_id} offline")


async def _leader(*clients):
    """The one client whose process holds the liveness lock."""
    def one_leads():
        return sum(c.app[PERIODIC]["liveness"].leading for c in clients) == 1

    await _eventually(one_leads, what="one liveness leader")
    [leader] = [c for c in clients if c.app[PERIODIC]["liveness"].leading]
    return leader


async def _token(admin, machine_id: str = "m1") -> str:
    return (await admin.machine(machine_id, gpu_count=2))["agent_token"]


async def test_a_machine_that_falls_silent_goes_offline_with_one_critical_alert(client, admin,
                                                                               db):
    token = await _token(admin)
    await _beat(client, token)
    assert await _status(db) == "online"
    await _went_offline(db)
    [alert] = await _offline_alerts(db)
    assert (alert["status"], alert["severity"], alert["resolved_at"]) == (
        "active", "critical", None)
    assert alert["details"] == {"timeout_s": TIMEOUT_S}
    # later scans see the machine still silent: no second alert, no refresh
    await _more_runs(client.app[PERIODIC]["liveness"], 5)
    assert [a["id"] for a in await _offline_alerts(db)] == [alert["id"]]
    assert (await _offline_alerts(db))[0]["last_seen_at"] == alert["last_seen_at"]


async def test_a_machine_is_not_declared_offline_before_its_timeout(client, admin, db,
                                                                    redis_client):
    token = await _token(admin)
    await _beat(client, token)
    keys = client.app[REDIS_KEYS]
    heard = await redis_client.zscore(keys.last_seen(), "m1")
    await _went_offline(db)
    [alert] = await _offline_alerts(db)
    assert alert["first_seen_at"].timestamp() - heard >= TIMEOUT_S


async def test_going_offline_is_announced_to_the_process_state_and_the_api(client, admin, db):
    token = await _token(admin)
    await _beat(client, token)
    assert client.app[STATE].status("m1") == "online"
    await _went_offline(db)
    await _eventually(lambda: client.app[STATE].status("m1") == "offline",
                      what="state offline")
    item = (await admin.ok("GET", "/api/v1/admin/machines"))["list"][0]
    assert item["status"] == "offline"
    alerts = await admin.ok("GET", "/api/v1/admin/alerts?machine_id=m1")
    assert [(a["rule"], a["status"]) for a in alerts["list"]] == [("machine_offline", "active")]


async def test_two_hub_processes_raise_the_offline_alert_only_once(make_app, aiohttp_client,
                                                                   accounts, db):
    first = await aiohttp_client(make_app(**LIVE))
    second = await aiohttp_client(make_app(**LIVE))
    leader = await _leader(first, second)
    follower = second if leader is first else first
    admin = await Api.login(follower, await accounts.user("root-admin"))
    token = await _token(admin)
    await _beat(follower, token)  # the machine reports to the process that does not lead
    await _went_offline(db)
    await _more_runs(leader.app[PERIODIC]["liveness"], 5)
    assert len(await _offline_alerts(db)) == 1
    assert follower.app[PERIODIC]["liveness"].runs == 0
    assert not follower.app[PERIODIC]["liveness"].leading


async def test_the_liveness_monitor_is_taken_over_when_its_process_stops(make_app,
                                                                         aiohttp_client,
                                                                         accounts, db):
    first = await aiohttp_client(make_app(**LIVE))
    second = await aiohttp_client(make_app(**LIVE))
    leader = await _leader(first, second)
    follower = second if leader is first else first
    admin = await Api.login(follower, await accounts.user("root-admin"))
    token = await _token(admin)
    await _beat(follower, token)
    await leader.close()  # a clean shutdown releases the lock
    await _went_offline(db)
    assert follower.app[PERIODIC]["liveness"].leading
    assert len(await _offline_alerts(db)) == 1


async def test_a_new_heartbeat_brings_the_machine_online_and_resolves_the_alert(client, admin,
                                                                               db):
    token = await _token(admin)
    await _beat(client, token)
    await _went_offline(db)
    await _eventually(lambda: client.app[STATE].status("m1") == "offline",
                      what="state offline")
    await _beat(client, token)
    assert await _status(db) == "online"
    [alert] = await _offline_alerts(db)
    assert alert["status"] == "resolved"
    assert alert["resolved_at"] is not None and alert["resolved_at"] >= alert["first_seen_at"]
    assert (await admin.ok("GET", "/api/v1/admin/alerts"))["list"] == []
    resolved = await admin.ok("GET", "/api/v1/admin/alerts?status=resolved")
    assert [(a["id"], a["resolved_at"] is not None) for a in resolved["list"]] == [
        (f"alert-{alert['id']}", True)]


async def test_the_next_outage_raises_a_new_alert(client, admin, db):
    token = await _token(admin)
    await _beat(client, token)
    await _went_offline(db)
    await _eventually(lambda: client.app[STATE].status("m1") == "offline",
                      what="state offline")
    await _beat(client, token)
    assert await _status(db) == "online"
    await _went_offline(db)
    alerts = await _offline_alerts(db)
    assert [a["status"] for a in alerts] == ["resolved", "active"]


async def test_a_heartbeat_at_another_process_brings_the_machine_back(make_app, aiohttp_client,
                                                                      accounts, db):
    first = await aiohttp_client(make_app(**LIVE))
    second = await aiohttp_client(make_app(**LIVE))
    leader = await _leader(first, second)
    follower = second if leader is first else first
    admin = await Api.login(leader, await accounts.user("root-admin"))
    token = await _token(admin)
    await _beat(leader, token)
    await _went_offline(db)
    # the follower learns of the transition through the bus
    await _eventually(lambda: follower.app[STATE].status("m1") == "offline",
                      what="follower sees offline")
    await _beat(follower, token)
    assert await _status(db) == "online"
    assert [a["status"] for a in await _offline_alerts(db)] == ["resolved"]
    await _eventually(lambda: leader.app[STATE].status("m1") == "online",
                      what="leader sees online")


async def test_last_heartbeat_at_is_recorded_with_the_hubs_receive_time(client, admin, db):
    token = await _token(admin)
    old = time.time() - 3600
    await _beat(client, token, ts=old)
    first = await db.fetchval("SELECT last_heartbeat_at FROM machines WHERE id = 'm1'")
    assert first is not None and first.timestamp() > old + 3000
    # later heartbeats move it forward (recorded by the monitor's scans)
    await asyncio.sleep(0.1)
    later = time.time()

    async def advanced():
        await _beat(client, token, ts=old)
        seen = await db.fetchval("SELECT last_heartbeat_at FROM machines WHERE id = 'm1'")
        return seen.timestamp() >= later

    await _eventually(advanced, what="last_heartbeat_at advanced")
    seen = await db.fetchval("SELECT last_heartbeat_at FROM machines WHERE id = 'm1'")
    assert seen.timestamp() <= time.time()
    # the API shows the latest frame's receive time, never older than the recorded one
    item = (await admin.ok("GET", "/api/v1/admin/machines"))["list"][0]
    assert datetime.fromisoformat(item["last_heartbeat_at"]) >= seen


async def test_a_machine_never_heard_from_stays_offline_and_raises_no_alert(client, admin, db):
    await _token(admin)
    started = time.monotonic()
    monitor = client.app[PERIODIC]["liveness"]
    await _eventually(lambda: monitor.leading, what="leading")
    await _more_runs(monitor, 5)
    await _eventually(lambda: time.monotonic() - started > TIMEOUT_S + INTERVAL_S,
                      what="past the timeout")
    await _more_runs(monitor, 1)
    row = await db.fetchrow("SELECT status, last_heartbeat_at FROM machines WHERE id = 'm1'")
    assert tuple(row) == ("offline", None)
    assert await db.fetchval("SELECT count(*) FROM alerts") == 0


async def test_a_frame_with_an_old_ts_still_counts_as_alive(make_app, aiohttp_client,
                                                            accounts, db, redis_client):
    client = await aiohttp_client(make_app(monitor_interval_s=INTERVAL_S,
                                           heartbeat_timeout_s=1.5))
    admin = await Api.login(client, await accounts.user("root-admin"))
    token = await _token(admin)
    monitor = client.app[PERIODIC]["liveness"]
    key = client.app[REDIS_KEYS].last_seen()
    before = time.time()
    await _beat(client, token, ts=time.time() - 3600)
    after = time.time()
    assert before <= await redis_client.zscore(key, "m1") <= after
    target = monitor.runs + 10  # 2 s of scans: more than the timeout
    while monitor.runs < target:
        await _beat(client, token, ts=time.time() - 3600)
        assert await _status(db) == "online"
        await asyncio.sleep(0.2)
    assert await _offline_alerts(db) == []


async def test_a_frame_with_a_future_ts_does_not_keep_a_silent_machine_alive(client, admin,
                                                                             db):
    token = await _token(admin)
    await _beat(client, token, ts=time.time() + 240)  # accepted: within 5 min ahead
    await _went_offline(db)
    assert len(await _offline_alerts(db)) == 1


async def test_a_machine_online_in_the_database_but_unknown_to_redis_goes_offline(
        make_app, aiohttp_client, accounts, db, redis_client):
    setup = await aiohttp_client(make_app(**LIVE))
    admin = await Api.login(setup, await accounts.user("root-admin"))
    token = await _token(admin)
    await _beat(setup, token)
    assert await _status(db) == "online"
    await setup.close()
    await redis_client.delete(setup.app[REDIS_KEYS].last_seen())  # Redis lost its data
    await aiohttp_client(make_app(**LIVE))  # the hub restarts
    await _went_offline(db, timeout_s=2 * TIMEOUT_S + INTERVAL_S + 2)
    assert len(await _offline_alerts(db)) == 1


async def test_a_heartbeat_written_to_redis_after_a_scan_still_reaches_last_heartbeat_at(
        make_app, aiohttp_client, accounts, db):
    # Redis writes only when the test flushes: the scan runs between receipt and write.
    client = await aiohttp_client(make_app(monitor_interval_s=INTERVAL_S,
                                           heartbeat_timeout_s=30.0, redis_flush_s=60.0))
    admin = await Api.login(client, await accounts.user("root-admin"))
    token = await _token(admin)
    monitor = client.app[PERIODIC]["liveness"]
    await _beat(client, token)  # online
    await asyncio.sleep(0.1)
    received = time.time()
    status, _ = await call(client, "POST", HEARTBEAT, token=token, json=frame())
    assert status == 200
    await _more_runs(monitor, 2)
    await client.app[INGEST].flush()
    await _more_runs(monitor, 3)
    seen = await db.fetchval("SELECT last_heartbeat_at FROM machines WHERE id = 'm1'")
    assert seen.timestamp() >= received
