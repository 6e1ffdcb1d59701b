"""Flow control (DESIGN.md "Flow control"): a write queue above its high-water mark stops
the hub reading agent sockets and refuses HTTP heartbeats with 503, a drained one resumes
them, and nothing it took is lost. A held socket is neither dropped for missing pings nor
its machine taken for silent.

PostgreSQL is made slow, not absent, by holding its packets (a partition): the COPY in
flight hangs, nothing fails, and the queue grows as it would behind a busy database.
"""

from __future__ import annotations

import asyncio
import socket
import time

import orjson
import pytest
from aiohttp import WSMsgType

from api.keys import INGEST, METRICS, REDIS, REDIS_KEYS
from tests.helpers import Api, bearer, eventually

pytestmark = pytest.mark.telemetry
HEARTBEAT = "/api/v1/agent/heartbeat"
GPUS = 2  # a frame is 3 rows: 2 GPU rows and the machine row


def metrics(ts: float) -> dict:
    return {"type": "metrics", "ts": ts, "cpu_util": 10.0, "mem_used": 10, "mem_total": 64,
            "disk_used": 10, "disk_total": 100,
            "gpus": [{"index": i, "util": 50.0, "mem_used": 100, "mem_total": 1000,
                      "temp": 50.0, "power": 100.0} for i in range(GPUS)]}


def metric(client, name: str) -> float:
    for line in client.app[METRICS].render().decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.fixture
async def slow_hub(make_app, aiohttp_client, accounts, pg_proxy):
    """A hub whose agents flow stops at 30 queued rows (10 frames) and resumes at 15, its
    PostgreSQL reached through a proxy the test can hold; a machine m1 and its token."""
    proxy, url = pg_proxy
    client = await aiohttp_client(make_app(database_url=url, ingest_high_water_rows=30,
                                           ingest_flush_s=0.05, ingest_batch_rows=6,
                                           ws_ping_interval_s=0.2))
    admin = await Api.login(client, await accounts.user("flow-admin"))
    token = (await admin.machine("m1", gpu_count=GPUS))["agent_token"]
    return client, proxy, token


async def stored(db) -> tuple[int, int]:
    return (await db.fetchval("SELECT count(*) FROM gpu_metrics"),
            await db.fetchval("SELECT count(*) FROM machine_metrics"))


async def test_a_full_queue_stops_reading_the_socket_and_a_drained_one_resumes(slow_hub, db):
    client, proxy, token = slow_hub
    ingest = client.app[INGEST]
    async with client.ws_connect("/ws/agent", headers=bearer(token)) as ws:
        proxy.hold()  # PostgreSQL stops answering: the queue only grows
        start = time.time() - 60
        for i in range(40):
            await ws.send_str(orjson.dumps(metrics(start + i)).decode())
        await eventually(lambda: not ingest.flow.is_open, what="flow closed")
        await eventually(lambda: ingest.flow.waiting == {"m1"}, what="socket held")
        # the tenth frame took the queue to its mark: the hub took no frame after it
        assert (ingest.frames, metric(client, "remotegpu_ingest_rows_queued")) == (10, 30)
        assert metric(client, "remotegpu_ingest_flow_open") == 0
        assert metric(client, "remotegpu_ingest_agents_held") == 1
        await asyncio.sleep(0.5)  # more than two ping intervals: the held socket stays
        assert ingest.frames == 10 and not ws.closed
        proxy.release()
        await eventually(lambda: ingest.frames == 40, what="every frame taken")
        await ingest.flush()
    assert await stored(db) == (80, 40)
    assert metric(client, "remotegpu_ingest_rows_dropped_total") == 0
    assert metric(client, "remotegpu_ingest_flow_closings_total") >= 1
    assert metric(client, "remotegpu_agent_sockets_dead_total") == 0


async def test_a_held_machine_counts_as_heard_from(slow_hub):
    client, proxy, token = slow_hub
    redis, keys = client.app[REDIS], client.app[REDIS_KEYS]
    async with client.ws_connect("/ws/agent", headers=bearer(token)) as ws:
        proxy.hold()
        start = time.time() - 60
        for i in range(12):
            await ws.send_str(orjson.dumps(metrics(start + i)).decode())
        await eventually(lambda: client.app[INGEST].flow.waiting == {"m1"}, what="held")
        held_since = time.time()

        async def seen_while_held():
            score = await redis.zscore(keys.last_seen(), "m1")
            return score is not None and score > held_since + 1

        await eventually(seen_while_held, what="last-seen refreshed while held")
        proxy.release()


def heartbeat(ts: float) -> dict:
    return {k: v for k, v in metrics(ts).items() if k != "type"}


async def test_http_heartbeats_get_503_with_retry_after_while_the_queue_is_full(slow_hub):
    client, proxy, token = slow_hub
    start = time.time() - 60
    resp = await client.post(HEARTBEAT, headers=bearer(token), json=heartbeat(start))
    assert resp.status == 200  # the token is known now: no query needed for it
    await client.app[INGEST].flush()
    proxy.hold()
    replies = []
    for i in range(1, 13):
        resp = await client.post(HEARTBEAT, headers=bearer(token), json=heartbeat(start + i))
        replies.append((resp.status, resp.headers.get("Retry-After"), await resp.json()))
    assert [status for status, _, _ in replies] == [200] * 10 + [503, 503]
    _, retry_after, body = replies[10]
    assert 1 <= int(retry_after) <= 10
    assert body["code"] == 50301 and body["data"]["retry_after"] == int(retry_after)
    assert metric(client, "remotegpu_ingest_frames_refused_total") == 2
    redis, keys = client.app[REDIS], client.app[REDIS_KEYS]
    proxy.release()
    await eventually(lambda: client.app[INGEST].flow.is_open, what="flow open again")
    resp = await client.post(HEARTBEAT, headers=bearer(token), json=heartbeat(time.time()))
    assert resp.status == 200
    assert await redis.zscore(keys.last_seen(), "m1") is not None


async def test_a_socket_that_answers_no_ping_is_dropped(slow_hub):
    client, _, token = slow_hub
    async with client.ws_connect("/ws/agent", headers=bearer(token), autoping=False) as ws:
        # never answering: the hub pings after 0.2 s of silence, drops 0.1 s later
        message = await ws.receive(timeout=5)
        while message.type is WSMsgType.PING:
            message = await ws.receive(timeout=5)
        assert message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR)
    assert metric(client, "remotegpu_agent_sockets_dead_total") == 1


async def test_a_socket_that_answers_pings_stays_open_while_idle(slow_hub):
    client, _, token = slow_hub
    async with client.ws_connect("/ws/agent", headers=bearer(token)) as ws:
        with pytest.raises(TimeoutError):  # five ping intervals, each answered
            await asyncio.wait_for(ws.receive(), 1.0)
        assert not ws.closed
    assert metric(client, "remotegpu_agent_sockets_dead_total") == 0


async def test_a_flooding_socket_is_read_no_further_ahead_than_its_buffers(slow_hub):
    """aiohttp pauses a socket whose message queue is full; the flow must not resume it
    over that pause, or everything the agent sends piles up unparsed in the hub's memory
    (a flood of 200 agents once took the hub to 3.5 GB). What the agent managed to send
    is therefore bounded by the socket buffers and aiohttp's queue, however fast it sends.
    """
    client, _, token = slow_hub
    ingest = client.app[INGEST]
    total, sent, gaps = 15000, 0, []
    start = time.time() - 60
    async with client.ws_connect("/ws/agent", headers=bearer(token)) as ws:
        # a small send buffer, so the agent's side cannot hide what the hub reads ahead
        ws.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)

        async def flood() -> None:
            nonlocal sent
            for i in range(total):
                await ws.send_str(orjson.dumps(metrics(start + i * 0.001)).decode())
                sent += 1

        sender = asyncio.create_task(flood())
        while not sender.done():
            gaps.append(sent - ingest.frames)
            await asyncio.sleep(0.005)
        await sender
        await eventually(lambda: ingest.frames == total, timeout_s=60, what="every frame")
    # the buffers on the way (both sockets', aiohttp's queue and one read) hold ~2,300
    assert max(gaps) < 5000
    assert metric(client, "remotegpu_ingest_flow_closings_total") >= 10
    assert metric(client, "remotegpu_ingest_rows_dropped_total") == 0
