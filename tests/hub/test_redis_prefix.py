"""Redis prefix ownership (DESIGN.md): a prefix holds one database's live data. A hub of
another database refuses to start on it, in one line; the data Redis still holds of
machines that no longer exist is not shown; a Redis that lost the claim with its data
gets it back."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid

import asyncpg
import orjson
import pytest
from aiohttp import web

from api.keys import PERIODIC, REDIS_KEYS, STATE
from storage.cache import PrefixTaken
from storage.db import database_identity
from storage.migrate import migrate
from tests.conftest import ADMIN_DSN, _drop_database, _dsn_for
from tests.helpers import Api


@pytest.fixture
async def other_database():
    """A second, freshly migrated database: another deployment's."""
    name = f"remotegpu_test_other_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(ADMIN_DSN)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    conn = await asyncpg.connect(_dsn_for(name))
    await migrate(conn, timescaledb=False)
    await conn.close()
    yield _dsn_for(name)
    await _drop_database(name)


async def test_a_hub_of_another_database_refuses_the_prefix(make_app, aiohttp_client,
                                                            other_database):
    await aiohttp_client(make_app())  # claims the prefix for the test database
    runner = web.AppRunner(make_app(database_url=other_database))
    try:
        with pytest.raises(PrefixTaken, match="holds the live data of database"):
            await runner.setup()
    finally:
        await runner.cleanup()


async def test_hubs_of_the_same_database_share_the_prefix(make_app, aiohttp_client, db,
                                                          redis_client, redis_prefix):
    await aiohttp_client(make_app())
    await aiohttp_client(make_app())
    owner = await redis_client.get(redis_prefix + "owner")
    assert owner.decode() == await database_identity(db)


async def test_serve_on_a_prefix_another_database_owns_exits_in_one_line(
        settings, redis_client, other_database):
    await redis_client.set(settings.redis_prefix + "owner", "some-other-cluster/db/1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub.cli", "serve", "--port", "0",
        env={**os.environ, "REMOTEGPU_DATABASE_URL": settings.database_url,
             "REMOTEGPU_REDIS_URL": settings.redis_url,
             "REMOTEGPU_REDIS_PREFIX": settings.redis_prefix,
             "REMOTEGPU_JWT_SECRET": settings.jwt_secret, "REMOTEGPU_METRICS_PORT": "0"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    errors = [line for line in stderr.decode().splitlines() if not line.startswith("{")]
    assert len(errors) == 1 and errors[0].startswith("remotegpu: Redis prefix "), stderr


async def test_the_live_state_of_machines_that_do_not_exist_is_not_shown(
        make_app, aiohttp_client, accounts, redis_client, redis_prefix):
    # Samples of a machine deleted while no hub listened (or of an earlier database).
    ghost = {"machine_id": "ghost", "ts": time.time(), "received": time.time(),
             "cpu_util": 1.0, "mem_used": 1.0, "mem_total": 2.0, "disk_used": 1.0,
             "disk_total": 2.0, "gpu_util": 1.0, "gpu_mem": 1.0, "gpus": []}
    await redis_client.hset(redis_prefix + "machines:latest", "ghost", orjson.dumps(ghost))
    await redis_client.zadd(redis_prefix + "machines:last-seen", {"ghost": time.time()})
    client = await aiohttp_client(make_app())
    admin = await Api.login(client, await accounts.user("root-admin"))
    await admin.machine("m1")
    assert "ghost" not in client.app[STATE].samples
    realtime = await admin.ok("GET", "/api/v1/admin/monitoring/realtime")
    assert [m["machine_id"] for m in realtime["machines"]] == []


async def test_a_claim_lost_with_the_redis_data_is_made_again(make_app, aiohttp_client,
                                                              redis_client, redis_prefix):
    client = await aiohttp_client(make_app())
    await redis_client.delete(client.app[REDIS_KEYS].owner())
    await client.app[PERIODIC]["redis_prefix"]._job()
    assert await redis_client.get(redis_prefix + "owner") is not None

