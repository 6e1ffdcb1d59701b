"""The fleet simulator against the real hub: registration, streaming over both
transports, and commands answered end to end."""

from __future__ import annotations

import asyncio
import time

import pytest

from agent_mock.counters import Counters
from agent_mock.options import Options
from agent_mock.runner import run
from api.keys import INGEST
from tests.helpers import Api


@pytest.mark.parametrize("transport", ["ws", "http"])
async def test_simulated_fleet_registers_streams_and_is_stored(client, accounts, db, tmp_path,
                                                               transport):
    admin = await accounts.user("root-admin")
    options = Options(hub=str(client.make_url("")).rstrip("/"), machines=4, interval=0.1,
                      transport=transport, admin_user=admin.username,
                      admin_password=admin.password, tokens_file=tmp_path / "tokens.json",
                      silent_fraction=0, overheat_fraction=0, duration=1.5,
                      summary_interval=0, seed=7)
    counters = await run(options)
    await client.app[INGEST].flush()
    assert counters.frames > 0
    assert await db.fetchval("SELECT count(*) FROM machines WHERE id LIKE 'sim-%'") == 4
    assert await db.fetchval("SELECT count(DISTINCT machine_id) FROM machine_metrics") == 4
    assert await db.fetchval("SELECT count(*) FROM machines WHERE status = 'online'") == 4


async def test_simulated_agent_answers_a_reclaim_and_the_lease_closes(client, accounts, db,
                                                                     tmp_path):
    admin_account = await accounts.user("root-admin")
    admin = await Api.login(client, admin_account)
    counters = Counters()
    options = Options(hub=str(client.make_url("")).rstrip("/"), machines=1, interval=0.1,
                      admin_user=admin_account.username, admin_password=admin_account.password,
                      tokens_file=tmp_path / "tokens.json", silent_fraction=0,
                      overheat_fraction=0, job_delay_scale=0.01, summary_interval=0)
    fleet = asyncio.create_task(run(options, counters))
    try:
        deadline = time.monotonic() + 10
        while not await db.fetchval("SELECT count(*) FROM machines WHERE status = 'online'"):
            assert time.monotonic() < deadline, "the simulated machine never came online"
            await asyncio.sleep(0.05)
        await admin.allocate("sim-00001", await accounts.tenant("Acme"))
        await admin.ok("POST", "/api/v1/admin/machines/sim-00001/reclaim", {"reason": "test"})
        while await db.fetchval("SELECT status FROM allocations") != "reclaimed":
            assert time.monotonic() < deadline, "the reclaim never completed"
            await asyncio.sleep(0.05)
    finally:
        fleet.cancel()
        await asyncio.gather(fleet, return_exceptions=True)
    assert await db.fetchval("SELECT allocation_status FROM machines") == "idle"
    assert await db.fetchval("SELECT status FROM jobs") == "succeeded"
