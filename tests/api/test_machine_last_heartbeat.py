"""``last_heartbeat_at`` as the API shows it (issue 11, point 6): the hub's receive time of
the machine's latest frame, not the stored column that the liveness scan brings up to date
only every monitor interval."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.agent_frames import frame
from tests.helpers import Api, call, eventually

HEARTBEAT = "/api/v1/agent/heartbeat"
MACHINES = "/api/v1/admin/machines"
# No liveness scan during a test: the stored time stays where the first frame put it.
QUIET = {"monitor_interval_s": 3600}
# Telemetry reaches another process once the bus has counted it (every 2 s).
BUS_DEADLINE_S = 15.0


def _at(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


@pytest.fixture
async def hub(make_app, aiohttp_client):
    return await aiohttp_client(make_app(**QUIET))


@pytest.fixture
async def m1(hub, accounts, db) -> str:
    """Machine m1, online since its first frame; its agent token."""
    admin = await Api.login(hub, await accounts.user("root-admin"))
    token = (await admin.machine("m1", gpu_count=2))["agent_token"]
    await _beat(hub, token)
    await eventually(lambda: db.fetchval("SELECT status = 'online' FROM machines"),
                     what="m1 online")
    return token


async def _beat(hub, token: str) -> tuple[datetime, datetime]:
    """Send a frame; the clock just before and just after the hub took it."""
    before = datetime.now(UTC)
    status, body = await call(hub, "POST", HEARTBEAT, token=token, json=frame())
    assert status == 200, body
    return before, datetime.now(UTC)


async def test_machine_list_and_detail_show_the_receive_time_of_the_latest_frame(
        hub, m1, accounts, db):
    admin = await Api.login(hub, await accounts.user("admin-2"))
    before, after = await _beat(hub, m1)
    stored = await db.fetchval("SELECT last_heartbeat_at FROM machines")
    [listed] = (await admin.ok("GET", MACHINES))["list"]
    detail = await admin.ok("GET", f"{MACHINES}/m1")
    assert stored < before
    assert before <= _at(listed["last_heartbeat_at"]) <= after
    assert detail["last_heartbeat_at"] == listed["last_heartbeat_at"]


async def test_customer_machines_show_the_receive_time_of_the_latest_frame(hub, m1,
                                                                          accounts):
    admin = await Api.login(hub, await accounts.user("admin-2"))
    alice = await accounts.customer("alice", "Acme")
    await admin.allocate("m1", alice.tenant_id)
    before, after = await _beat(hub, m1)
    [mine] = await (await Api.login(hub, alice)).ok("GET", "/api/v1/customer/machines")
    assert before <= _at(mine["last_heartbeat_at"]) <= after


async def test_another_hub_process_shows_the_receive_time_of_the_latest_frame(
        hub, m1, make_app, aiohttp_client, accounts):
    other = await aiohttp_client(make_app(**QUIET))
    admin = await Api.login(other, await accounts.user("admin-2"))
    since, _ = await _beat(hub, m1)

    async def shown_there() -> bool:
        await _beat(hub, m1)  # the agent goes on talking (to the first hub only)
        shown = _at((await admin.ok("GET", f"{MACHINES}/m1"))["last_heartbeat_at"])
        return shown is not None and since <= shown <= datetime.now(UTC)

    await eventually(shown_there, BUS_DEADLINE_S, "a receive time of the first hub's on the "
                     "other", poll_s=0.2)


async def test_a_machine_never_heard_from_has_no_last_heartbeat(hub, accounts):
    admin = await Api.login(hub, await accounts.user("root-admin"))
    created = await admin.machine("m9")
    assert created["last_heartbeat_at"] is None
    assert (await admin.ok("GET", f"{MACHINES}/m9"))["last_heartbeat_at"] is None
