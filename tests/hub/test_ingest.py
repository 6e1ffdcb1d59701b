"""The ingest path under trouble (PostgreSQL or Redis gone) and across hub processes."""

from __future__ import annotations

import asyncio
import time

import pytest

from api.keys import BUS, INGEST, METRICS, REDIS, REDIS_KEYS, STATE
from tests.helpers import Api, bearer, call, eventually

pytestmark = pytest.mark.telemetry
HEARTBEAT = "/api/v1/agent/heartbeat"


def frame(util: float = 50.0, gpus: int = 2) -> dict:
    return {"ts": time.time(), "cpu_util": 10.0, "mem_used": 10, "mem_total": 64,
            "disk_used": 10, "disk_total": 100,
            "gpus": [{"index": i, "util": util, "mem_used": 100, "mem_total": 1000,
                      "temp": 50.0, "power": 100.0} for i in range(gpus)]}


def _metric(client, name: str) -> float:
    for line in client.app[METRICS].render().decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def _hub(make_app, aiohttp_client, accounts, **settings):
    client = await aiohttp_client(make_app(**settings))
    admin = await Api.login(client, await accounts.user(f"admin-{id(client)}"))
    token = (await admin.machine("m1", gpu_count=2))["agent_token"]
    return client, token


async def test_heartbeats_are_answered_while_postgres_is_down_and_written_after(
        make_app, aiohttp_client, accounts, pg_proxy, db):
    proxy, url = pg_proxy
    client, token = await _hub(make_app, aiohttp_client, accounts, database_url=url,
                               ingest_flush_s=0.05)
    await call(client, "POST", HEARTBEAT, token=token, json=frame())  # token now cached
    await proxy.cut()
    for _ in range(5):
        status, body = await call(client, "POST", HEARTBEAT, token=token, json=frame())
        assert (status, body["data"]) == (200, {"commands": []})
    # the writer fails and keeps the rows
    await eventually(lambda: _metric(client, "remotegpu_ingest_write_failures_total") > 0)
    await proxy.restore()

    async def all_written():
        return (await db.fetchval("SELECT count(*) FROM gpu_metrics"),
                await db.fetchval("SELECT count(*) FROM machine_metrics")) == (12, 6)

    await eventually(all_written)
    assert _metric(client, "remotegpu_ingest_rows_dropped_total") == 0


async def test_frames_beyond_the_queue_bound_are_refused_with_retry_after_never_dropped(
        make_app, aiohttp_client, accounts, pg_proxy, db):
    proxy, url = pg_proxy
    client, token = await _hub(make_app, aiohttp_client, accounts, database_url=url,
                               ingest_queue_rows=10, ingest_high_water_rows=6,
                               ingest_flush_s=0.05)
    await call(client, "POST", HEARTBEAT, token=token, json=frame())
    await client.app[INGEST].flush()
    await proxy.cut()
    await call(client, "POST", HEARTBEAT, token=token, json=frame())
    await eventually(lambda: _metric(client, "remotegpu_ingest_write_failures_total") > 0)
    # PostgreSQL is away: the queue may fill to its bound (10 rows, 3 per frame)
    replies = [await client.post(HEARTBEAT, json=frame(), headers=bearer(token))
               for _ in range(4)]
    assert [r.status for r in replies] == [200, 200, 503, 503]
    assert all(1 <= int(r.headers["Retry-After"]) <= 10 for r in replies[2:])
    assert (await replies[2].json())["code"] == 50301
    assert _metric(client, "remotegpu_ingest_rows_queued") == 9
    assert _metric(client, "remotegpu_ingest_rows_dropped_total") == 0
    assert _metric(client, "remotegpu_ingest_rows_refused_total") == 6
    await proxy.restore()

    async def written():
        return await db.fetchval("SELECT count(*) FROM machine_metrics") == 4

    await eventually(written)


async def test_heartbeats_are_answered_while_redis_is_down_and_latest_catches_up(
        make_app, aiohttp_client, accounts, redis_proxy, redis_client, settings):
    proxy, url = redis_proxy
    client, token = await _hub(make_app, aiohttp_client, accounts, redis_url=url,
                               redis_flush_s=0.05)
    await call(client, "POST", HEARTBEAT, token=token, json=frame())
    await proxy.cut()
    status, _ = await call(client, "POST", HEARTBEAT, token=token, json=frame(util=77.0))
    assert status == 200
    await asyncio.sleep(0.3)
    await proxy.restore()

    async def caught_up():
        raw = await redis_client.hget(f"{settings.redis_prefix}machines:latest", "m1")
        return raw is not None and b'"gpu_util":77.0' in raw

    await eventually(caught_up)


async def test_a_frame_on_one_process_reaches_the_latest_state_of_another(
        make_app, aiohttp_client, accounts):
    first = await aiohttp_client(make_app(redis_flush_s=0.02))
    second = await aiohttp_client(make_app(redis_flush_s=0.02))
    admin = await Api.login(first, await accounts.user("root-admin"))
    token = (await admin.machine("m1", gpu_count=2))["agent_token"]

    async def first_knows_a_peer_listens():
        return first.app[BUS].peers == 1

    await eventually(first_knows_a_peer_listens)
    await call(first, "POST", HEARTBEAT, token=token, json=frame(util=42.0))

    async def seen_by_second():
        return second.app[STATE].gpu_util("m1") == 42.0

    await eventually(seen_by_second)
    other_admin = await Api.login(second, await accounts.user("other-admin"))
    item = (await other_admin.ok("GET", "/api/v1/admin/machines"))["list"][0]
    assert item["gpu_util"] == 42.0


async def test_a_job_queued_on_one_process_reaches_an_agent_socket_on_another(
        make_app, aiohttp_client, accounts):
    first = await aiohttp_client(make_app())
    second = await aiohttp_client(make_app())
    admin = await Api.login(first, await accounts.user("root-admin"))
    token = (await admin.machine("m1"))["agent_token"]
    await admin.allocate("m1", await accounts.tenant("Acme"))
    async with second.ws_connect("/ws/agent", headers={"Authorization":
                                                        f"Bearer {token}"}) as ws:
        await asyncio.sleep(0.2)  # the socket is registered on the second process
        job_id = (await admin.ok("POST", "/api/v1/admin/machines/m1/reclaim",
                                 {"reason": "x"}))["task_id"]
        command = await ws.receive_json(timeout=5)
    assert (command["type"], command["job_id"]) == ("command", job_id)


@pytest.mark.parametrize("gpus", [0, 8])
async def test_gpu_util_is_the_mean_and_gpu_mem_the_sum(client, admin, db, gpus):
    token = (await admin.machine("m1", gpu_count=8))["agent_token"]
    body = frame(gpus=gpus)
    for i, gpu in enumerate(body["gpus"]):
        gpu["util"], gpu["mem_used"] = 10.0 * i, 100.0 * i
    await call(client, "POST", HEARTBEAT, token=token, json=body)
    sample = client.app[STATE].samples["m1"]
    if gpus:
        assert (sample.gpu_util, sample.gpu_mem) == (35.0, 2800.0)
    else:
        assert (sample.gpu_util, sample.gpu_mem) == (None, 0)
    await client.app[INGEST].flush()
    assert await client.app[REDIS].hexists(client.app[REDIS_KEYS].latest(), "m1")


async def test_a_process_alone_does_not_publish_telemetry(client, admin):
    token = (await admin.machine("m1", gpu_count=2))["agent_token"]
    await call(client, "POST", HEARTBEAT, token=token, json=frame())
    await client.app[INGEST].flush()
    assert client.app[BUS].peers == 0


async def test_a_new_process_starts_with_the_latest_samples_from_redis(
        make_app, aiohttp_client, accounts):
    first = await aiohttp_client(make_app(redis_flush_s=0.02))
    admin = await Api.login(first, await accounts.user("root-admin"))
    token = (await admin.machine("m1", gpu_count=2))["agent_token"]
    await call(first, "POST", HEARTBEAT, token=token, json=frame(util=64.0))
    await first.app[INGEST].flush()
    second = await aiohttp_client(make_app())
    assert second.app[STATE].gpu_util("m1") == 64.0
