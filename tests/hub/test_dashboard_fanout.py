"""Dashboard fan-out over ``GET /ws/connect`` (issue 6, point 2: topics, encode-once
fan-out and backpressure; CONTRACT.md §5): admins get periodic ``monitoring_snapshot``s
with a gapless ``seq``, customers only their tenant's ``monitoring_update``s (at most one
per machine per tick) and events, machines that change hands change topics, two hub
processes share events and telemetry through Redis, a reader that cannot keep up misses
snapshots and is closed with 4008 without hurting the others, shutdown closes with 1001,
and /metrics tells all of it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import orjson
import pytest
from aiohttp import FormData, WSMsgType
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.keys import BUS, DASHBOARD_SOCKETS, FANOUT, INGEST, PERIODIC
from hub import fanout as fanout_module
from services.frames import MetricsFrame
from tests.helpers import Api, call, eventually

HEARTBEAT = "/api/v1/agent/heartbeat"
MACHINES = "/api/v1/admin/machines"
GLOBAL = "global_monitoring"
SNAPSHOT_S = 0.3
UPDATE_S = 0.1
FAST = {"snapshot_interval_s": SNAPSHOT_S, "tenant_update_interval_s": UPDATE_S}
# Generous: polls return as soon as the condition holds.
DEADLINE_S = 10.0
# The bus counts listening peers every PEER_CHECK_S (2 s): telemetry needs a few seconds.
BUS_DEADLINE_S = 15.0
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455


def frame(*, utils: tuple[float, ...] = (50.0, 50.0), mems: tuple[float, ...] = (100, 100),
          cpu: float = 10.0, disk_used: float = 10, ts: float | None = None) -> dict:
    return {"ts": time.time() if ts is None else ts, "cpu_util": cpu, "mem_used": 10,
            "mem_total": 64, "disk_used": disk_used, "disk_total": 100,
            "gpus": [{"index": i, "util": util, "mem_used": mem, "mem_total": 81920,
                      "temp": 50.0, "power": 100.0}
                     for i, (util, mem) in enumerate(zip(utils, mems, strict=True))]}


async def _eventually(predicate, timeout_s: float = DEADLINE_S, what: str = "condition"):
    return await eventually(predicate, timeout_s, what, poll_s=0.02)


@pytest.fixture
async def client(make_app, aiohttp_client):
    """A hub with fast dashboard ticks (snapshots every 0.3 s, tenant updates every 0.1 s)."""
    return await aiohttp_client(make_app(**FAST))


async def _beat(client: TestClient, token: str, *, flush: bool = True, **fields: Any) -> None:
    status, body = await call(client, "POST", HEARTBEAT, token=token, json=frame(**fields))
    assert status == 200, body
    if flush:
        await client.app[INGEST].flush()


async def _machine(admin: Api, machine_id: str) -> str:
    """Register a two-GPU machine; its agent token."""
    return (await admin.machine(machine_id, gpu_count=2))["agent_token"]


@asynccontextmanager
async def _streaming(client: TestClient, tokens: list[str], period_s: float = 0.05,
                     **fields: Any) -> AsyncIterator[None]:
    """Agents of these machines send a frame every ``period_s`` until the block ends."""
    stop = asyncio.Event()

    async def run() -> None:
        while not stop.is_set():
            for token in tokens:
                await _beat(client, token, flush=False, **fields)
            with suppress(TimeoutError):
                async with asyncio.timeout(period_s):
                    await stop.wait()

    task = asyncio.create_task(run())
    try:
        yield
    finally:
        stop.set()
        await task
        await client.app[INGEST].flush()


class Dashboard:
    """One dashboard socket; a task reads every message into ``messages``."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type == WSMsgType.TEXT:
                self.messages.append(orjson.loads(message.data))

    def of(self, kind: str, since: int = 0) -> list[dict[str, Any]]:
        return [m for m in self.messages[since:] if m["type"] == kind]

    def machine_ids(self, since: int = 0) -> set[str]:
        """Every machine any message since ``since`` was about."""
        ids: set[str] = set()
        for message in self.messages[since:]:
            data = message.get("data") or {}
            if "machine_id" in data:
                ids.add(data["machine_id"])
            for row in data.get("machines", ()):
                ids.add(row["machine_id"])
        return ids

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool], what: str,
                       since: int = 0, timeout_s: float = DEADLINE_S) -> dict[str, Any]:
        return await _eventually(
            lambda: next((m for m in self.messages[since:] if predicate(m)), None),
            timeout_s, what)

    async def closed(self, timeout_s: float = DEADLINE_S) -> int | None:
        async with asyncio.timeout(timeout_s):
            await self.task
        return self.ws.close_code


Connect = Callable[..., Awaitable[Dashboard]]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Open a dashboard socket on a test client with a token; waits for the welcome."""
    opened: list[Dashboard] = []

    async def open_(client: TestClient, token: str) -> Dashboard:
        dashboard = Dashboard(await client.ws_connect(f"/ws/connect?token={token}"))
        opened.append(dashboard)
        await dashboard.wait_for(lambda m: m["type"] == "welcome", "welcome")
        return dashboard

    yield open_
    for dashboard in opened:
        with suppress(Exception):
            async with asyncio.timeout(5):
                await dashboard.ws.close()
        dashboard.task.cancel()
        with suppress(BaseException):
            await dashboard.task


def _update_of(machine_id: str, **expected: Any) -> Callable[[dict[str, Any]], bool]:
    def matches(message: dict[str, Any]) -> bool:
        data = message.get("data") or {}
        return (message["type"] == "monitoring_update" and data["machine_id"] == machine_id
                and all(data.get(k) == v for k, v in expected.items()))
    return matches


def _status_of(machine_id: str, **expected: Any) -> Callable[[dict[str, Any]], bool]:
    def matches(message: dict[str, Any]) -> bool:
        data = message.get("data") or {}
        return (message["type"] == "machine_status" and data["machine_id"] == machine_id
                and all(data.get(k) == v for k, v in expected.items()))
    return matches


def _row(snapshot: dict[str, Any], machine_id: str) -> dict[str, Any] | None:
    return next((r for r in snapshot["data"]["machines"] if r["machine_id"] == machine_id),
                None)


async def test_an_admin_receives_periodic_snapshots_of_every_machine_with_its_latest_metrics(
        client, admin, connect):
    m1, m2 = await _machine(admin, "m1"), await _machine(admin, "m2")
    await _beat(client, m1, utils=(30.0, 70.0), mems=(1000, 3000), cpu=12.5)
    await _beat(client, m2, utils=(10.0, 20.0), mems=(512, 256), cpu=99.0)
    dashboard = await connect(client, admin.token)
    [welcome] = dashboard.of("welcome")
    assert welcome["data"]["role"] == "admin" and welcome["data"]["topics"] == [GLOBAL]

    def full(message: dict[str, Any]) -> bool:
        return (message["type"] == "monitoring_snapshot"
                and all((_row(message, m) or {}).get("status") == "online"
                        for m in ("m1", "m2")))

    snapshot = await dashboard.wait_for(full, "a snapshot with both machines online")
    assert snapshot["topic"] == GLOBAL
    rows = {r["machine_id"]: r for r in snapshot["data"]["machines"]}
    assert set(rows) == {"m1", "m2"}
    assert {k: rows["m1"][k] for k in ("status", "gpu_util", "gpu_mem", "cpu_util")} == {
        "status": "online", "gpu_util": 50.0, "gpu_mem": 4000, "cpu_util": 12.5}
    assert {k: rows["m2"][k] for k in ("status", "gpu_util", "gpu_mem", "cpu_util")} == {
        "status": "online", "gpu_util": 15.0, "gpu_mem": 768, "cpu_util": 99.0}
    assert isinstance(rows["m1"]["ts"], float)
    # periodic: more snapshots follow, numbered one per tick, ts on the tick grid
    await _eventually(lambda: len(dashboard.of("monitoring_snapshot")) >= 6,
                      what="six snapshots")
    snapshots = dashboard.of("monitoring_snapshot")
    seqs = [s["data"]["seq"] for s in snapshots]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    ticks = [s["data"]["ts"] for s in snapshots[1:]]
    assert all(abs(t / SNAPSHOT_S - round(t / SNAPSHOT_S)) < 1e-3 for t in ticks)
    assert ticks == sorted(ticks)
    # later frames show in later snapshots
    await _beat(client, m1, utils=(90.0, 100.0), mems=(10, 20), cpu=1.0)
    newer = await dashboard.wait_for(
        lambda m: m["type"] == "monitoring_snapshot"
        and (_row(m, "m1") or {}).get("gpu_util") == 95.0, "the new frame in a snapshot")
    assert (_row(newer, "m1")["gpu_mem"], _row(newer, "m1")["cpu_util"]) == (30, 1.0)


async def test_a_newly_registered_machine_is_listed_in_snapshots_before_it_reports(
        client, admin, accounts, connect, make_app, aiohttp_client):
    dashboard = await connect(client, admin.token)
    await _machine(admin, "m1")
    # a hub started after the registration lists it, offline and without metrics ...
    later = await aiohttp_client(make_app(**FAST))
    other = await connect(later, (await Api.login(later, await accounts.user("admin-2"))).token)
    snapshot = await other.wait_for(lambda m: m["type"] == "monitoring_snapshot",
                                    "a snapshot on the later hub")
    assert _row(snapshot, "m1") == {"machine_id": "m1", "status": "offline", "gpu_util": None,
                                    "gpu_mem": None, "cpu_util": None, "ts": None}
    # ... and so must the hub that was running when it was registered
    await dashboard.wait_for(
        lambda m: m["type"] == "monitoring_snapshot" and _row(m, "m1") is not None,
        "m1 in a snapshot of the running hub", timeout_s=10 * SNAPSHOT_S)


async def test_customers_receive_only_their_own_tenants_machines(client, admin, accounts,
                                                                connect):
    alice = await accounts.customer("alice", "Tenant A")
    bob = await accounts.customer("bob", "Tenant B")
    tokens = {m: await _machine(admin, m) for m in ("a1", "a2", "b1", "free")}
    await admin.allocate("a1", alice.tenant_id)
    await admin.allocate("a2", alice.tenant_id)
    await admin.allocate("b1", bob.tenant_id)
    a = await connect(client, (await Api.login(client, alice)).token)
    b = await connect(client, (await Api.login(client, bob)).token)
    everyone = await connect(client, admin.token)
    assert a.of("welcome")[0]["data"]["topics"] == [f"tenant_{alice.tenant_id}_monitoring"]
    assert b.of("welcome")[0]["data"]["topics"] == [f"tenant_{bob.tenant_id}_monitoring"]
    async with _streaming(client, list(tokens.values())):
        for machine_id, dashboard in (("a1", a), ("a2", a), ("b1", b)):
            await dashboard.wait_for(_update_of(machine_id), f"an update of {machine_id}")
        for dashboard in (a, b):  # a stream of updates, not only the initial state
            await _eventually(lambda d=dashboard: len(d.of("monitoring_update")) > 4,
                              what="more than 4 updates")
        await _eventually(lambda: {"a1", "a2", "b1", "free"} <= everyone.machine_ids(),
                          what="every machine on the admin's dashboard")
    assert a.machine_ids() == {"a1", "a2"}
    assert b.machine_ids() == {"b1"}
    for dashboard, tenant_id in ((a, alice.tenant_id), (b, bob.tenant_id)):
        assert {m["topic"] for m in dashboard.messages if "topic" in m} == {
            f"tenant_{tenant_id}_monitoring"}
        assert not dashboard.of("monitoring_snapshot")


async def test_several_frames_within_one_tick_make_one_update_per_machine(client, admin,
                                                                         accounts, connect):
    alice = await accounts.customer("alice", "Tenant A")
    for machine_id in ("m1", "m2"):
        await _machine(admin, machine_id)
        await admin.allocate(machine_id, alice.tenant_id)
    a = await connect(client, (await Api.login(client, alice)).token)
    ingest = client.app[INGEST]
    for burst in (1, 2):
        start = len(a.messages)
        # the agent's frames of one tick: accepted back to back, no tick can run between
        for cpu in range(1, 6):
            for machine_id in ("m1", "m2"):
                body = MetricsFrame.model_validate(frame(cpu=float(cpu + 10 * burst))).as_frame()
                ingest.accept(machine_id, body, time.time())
        last = float(5 + 10 * burst)
        await a.wait_for(_update_of("m1", cpu_util=last), f"burst {burst} on m1", start)
        await a.wait_for(_update_of("m2", cpu_util=last), f"burst {burst} on m2", start)
        await asyncio.sleep(5 * UPDATE_S)  # several more ticks, no new frames
        updates = a.of("monitoring_update", start)
        assert sorted(u["data"]["machine_id"] for u in updates) == ["m1", "m2"]
        assert all(u["data"]["cpu_util"] == last for u in updates)


async def test_events_reach_the_admin_and_the_owning_tenant_only(client, admin, accounts,
                                                                 connect):
    alice = await accounts.customer("alice", "Tenant A")
    bob = await accounts.customer("bob", "Tenant B")
    token = await _machine(admin, "m1")
    await _machine(admin, "m2")
    everyone = await connect(client, admin.token)
    a = await connect(client, (await Api.login(client, alice)).token)
    b = await connect(client, (await Api.login(client, bob)).token)
    # machine_status: leasing m1 to A
    await admin.allocate("m1", alice.tenant_id)
    for dashboard in (everyone, a):
        event = await dashboard.wait_for(_status_of("m1", tenant_id=alice.tenant_id,
                                                    allocation_status="allocated"),
                                         "machine_status of m1")
        assert event["data"]["status"] == "offline"
    # alert: m1's disk fills up (alert rules run in the liveness leader)
    await _eventually(lambda: client.app[PERIODIC]["liveness"].leading, what="leading")
    await _beat(client, token, disk_used=99)

    def disk_alert(message: dict[str, Any]) -> bool:
        return (message["type"] == "alert" and message["data"]["machine_id"] == "m1"
                and message["data"]["rule"] == "disk_full")

    for dashboard in (everyone, a):
        alert = await dashboard.wait_for(disk_alert, "the disk alert")
        assert alert["data"]["status"] == "active"
        assert alert["data"]["tenant_id"] == alice.tenant_id
    assert a.of("alert")[0]["topic"] == f"tenant_{alice.tenant_id}_monitoring"
    assert everyone.of("alert")[0]["topic"] == GLOBAL
    # a later event for B: B's socket has had the chance to receive everything before it
    await admin.allocate("m2", bob.tenant_id)
    await b.wait_for(_status_of("m2", tenant_id=bob.tenant_id), "machine_status of m2")
    await everyone.wait_for(_status_of("m2"), "machine_status of m2 for the admin")
    assert "m1" not in b.machine_ids()
    assert not b.of("alert")
    assert "m2" not in a.machine_ids()


async def test_a_machine_moved_to_another_tenant_streams_to_its_new_tenant_only(
        client, admin, accounts, connect):
    alice = await accounts.customer("alice", "Tenant A")
    bob = await accounts.customer("bob", "Tenant B")
    moving, staying = await _machine(admin, "m1"), await _machine(admin, "m2")
    await admin.allocate("m1", alice.tenant_id)
    await admin.allocate("m2", alice.tenant_id)
    a = await connect(client, (await Api.login(client, alice)).token)
    b = await connect(client, (await Api.login(client, bob)).token)
    async with _streaming(client, [moving, staying]):
        await a.wait_for(_update_of("m1"), "m1 streams to A")
        # reclaim through the agent's job: the lease closes when the agent reports success
        data = await admin.ok("POST", f"{MACHINES}/m1/reclaim", {"reason": "moving"})
        job = data["task_id"]
        await a.wait_for(_status_of("m1", allocation_status="maintenance"),
                       "m1 in maintenance while reclaimed")

        async def job_sent() -> bool:
            return (await admin.ok("GET", f"/api/v1/jobs/{job}"))["status"] == "sent"

        await _eventually(job_sent, what="the reclaim job sent to the agent")
        for status in ("running", "succeeded"):
            code, body = await call(client, "POST", f"/api/v1/agent/jobs/{job}",
                                    token=moving, json={"status": status})
            assert code == 200, body
        left = await a.wait_for(_status_of("m1", tenant_id=None), "A learns m1 left")
        assert left["data"]["allocation_status"] == "idle"
        await admin.allocate("m1", bob.tenant_id)
        await b.wait_for(_status_of("m1", tenant_id=bob.tenant_id), "B learns of m1")
        moved_at = len(a.messages)
        since_b = len(b.messages)
        after = time.time()
        await b.wait_for(lambda m: _update_of("m1")(m) and m["data"]["ts"] > after,
                         "m1 streams to B", since_b)
        # A still gets its other machine's updates from after the move, never m1's
        await a.wait_for(lambda m: _update_of("m2")(m) and m["data"]["ts"] > after + 0.3,
                         "m2 streams to A", moved_at)
    assert a.machine_ids(moved_at) == {"m2"}
    assert b.machine_ids() == {"m1"}
    assert not [m for m in a.messages[a.messages.index(left):]
                if _update_of("m1")(m)]


async def test_two_hub_processes_share_events_and_telemetry(make_app, aiohttp_client,
                                                            accounts, connect):
    first = await aiohttp_client(make_app(**FAST))
    second = await aiohttp_client(make_app(**FAST))
    root = await accounts.user("root-admin")
    alice = await accounts.customer("alice", "Tenant A")
    admin1 = await Api.login(first, root)
    admin2 = await Api.login(second, root)
    everyone = await connect(second, admin2.token)
    a = await connect(second, (await Api.login(second, alice)).token)
    token = await _machine(admin1, "m1")
    # an event published on the first process reaches sockets of the second
    await admin1.allocate("m1", alice.tenant_id)
    for dashboard in (everyone, a):
        await dashboard.wait_for(_status_of("m1", tenant_id=alice.tenant_id),
                                 "machine_status from the other process")
    # telemetry received by the first process appears in the second one's topics
    await _eventually(lambda: first.app[BUS].peers >= 1, BUS_DEADLINE_S,
                      "the first process sees a listening peer")

    def remote(message: dict[str, Any]) -> bool:
        row = _row(message, "m1") if message["type"] == "monitoring_snapshot" else None
        return row is not None and row["gpu_util"] == 50.0 and row["status"] == "online"

    async def seen_remotely() -> bool:
        await _beat(first, token, utils=(40.0, 60.0), mems=(2048, 2048), cpu=33.0)
        return any(remote(m) for m in everyone.messages)

    # (the sample and the machine_status saying it came online travel separately)
    await _eventually(seen_remotely, BUS_DEADLINE_S, "m1's metrics in the second's snapshots")
    row = _row(next(m for m in everyone.messages if remote(m)), "m1")
    assert (row["gpu_mem"], row["cpu_util"]) == (4096, 33.0)
    update = await a.wait_for(_update_of("m1", cpu_util=33.0), "m1's update on the second")
    assert (update["data"]["gpu_util"], update["data"]["gpu_mem"]) == (50.0, 4096)


async def _raw_dashboard(client: TestClient, token: str, rcvbuf: int) -> socket.socket:
    """A client that completes the WebSocket handshake and then reads nothing."""
    loop = asyncio.get_running_loop()
    host, port = client.server.host, client.server.port
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await loop.sock_connect(sock, (host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        await loop.sock_sendall(sock, (
            f"GET /ws/connect?token={token} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while not head.endswith(b"\r\n\r\n"):  # byte by byte: no frame is read
            chunk = await loop.sock_recv(sock, 1)
            assert chunk, head
            head += chunk
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest())
        assert head.startswith(b"HTTP/1.1 101"), head
        assert b"Sec-WebSocket-Accept: " + accept + b"\r\n" in head, head
    except BaseException:
        sock.close()
        raise
    return sock


async def _read_all(sock: socket.socket) -> tuple[bytes, bool]:
    """Everything left on the socket, and whether the connection was reset."""
    loop = asyncio.get_running_loop()
    data = b""
    async with asyncio.timeout(DEADLINE_S):
        while True:
            try:
                chunk = await loop.sock_recv(sock, 1 << 16)
            except ConnectionResetError:
                return data, True
            if not chunk:
                return data, False
            data += chunk


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each whole unmasked frame in ``data``."""
    frames, at = [], 0
    while at + 2 <= len(data):
        first, second = data[at], data[at + 1]
        assert not second & 0x80, "server frames are never masked"
        size, at = second & 0x7F, at + 2
        if size == 126:
            if at + 2 > len(data):
                break
            (size,), at = struct.unpack_from("!H", data, at), at + 2
        elif size == 127:
            if at + 8 > len(data):
                break
            (size,), at = struct.unpack_from("!Q", data, at), at + 8
        if at + size > len(data):
            break
        frames.append((first & 0x0F, data[at:at + size]))
        at += size
    return frames


SLOW = {"snapshot_interval_s": 0.1, "tenant_update_interval_s": UPDATE_S,
        "ws_high_water_bytes": 1024, "ws_slow_close_s": 1.0}
FLEET = 200


async def _big_fleet(client: TestClient, admin: Api) -> None:
    """Enough machines, all reporting, for snapshots of tens of kB."""
    csv = "id,name,ip,gpu_model,gpu_count\r\n" + "".join(
        f"m{i:03},m{i:03},10.0.{i // 250}.{i % 250 + 1},A100,2\r\n" for i in range(FLEET))
    upload = FormData()
    upload.add_field("file", csv.encode(), filename="machines.csv", content_type="text/csv")
    status, reply = await admin.post(f"{MACHINES}/import", data=upload)
    assert status == 200, reply
    tokens = [m["agent_token"] for m in reply["data"]["machines"]]
    assert len(tokens) == FLEET
    for start in range(0, len(tokens), 20):
        await asyncio.gather(*(_beat(client, t, flush=False) for t in tokens[start:start + 20]))
    await client.app[INGEST].flush()


@asynccontextmanager
async def _stuck_reader(client: TestClient, token: str) -> AsyncIterator[socket.socket]:
    """A raw dashboard that reads nothing after the handshake, behind a slow network path:
    small kernel buffers on both ends (not megabytes of autotuned loopback buffer), so the
    hub's transport buffer fills within a few snapshots."""
    fanout = client.app[FANOUT]
    before = len(fanout.subscribers())
    sock = await _raw_dashboard(client, token, rcvbuf=4096)
    try:
        await _eventually(lambda: len(fanout.subscribers()) == before + 1, what="subscribed")
        [sub] = [sub for sub in fanout.subscribers()
                 if sub.transport.get_extra_info("peername")[1] == sock.getsockname()[1]]
        sub.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET,
                                                          socket.SO_SNDBUF, 8192)
        yield sock
    finally:
        sock.close()


async def test_a_reader_that_cannot_keep_up_misses_snapshots_then_is_closed_with_4008(
        make_app, aiohttp_client, accounts, connect, monkeypatch):
    # the peer gets all the time it needs to take the close frame once it reads again
    monkeypatch.setattr(fanout_module, "ABORT_AFTER_S", 60.0)
    client = await aiohttp_client(make_app(**SLOW))
    admin = await Api.login(client, await accounts.user("root-admin"))
    fanout = client.app[FANOUT]
    await _big_fleet(client, admin)
    healthy = await connect(client, admin.token)
    async with _stuck_reader(client, admin.token) as sock:
        await _eventually(lambda: fanout.skipped > 0, what="snapshots skipped")
        await _eventually(lambda: fanout.slow_closes == 1, what="the slow reader closed")
        seq_at_close = healthy.of("monitoring_snapshot")[-1]["data"]["seq"]
        data, reset = await _read_all(sock)
    assert not reset
    frames = _frames(data)
    assert sum(len(payload) for _, payload in frames) < len(data)  # headers
    assert orjson.loads(frames[0][1])["type"] == "welcome"
    opcode, payload = frames[-1]
    assert opcode == 0x8, "the last frame is the close frame"
    assert struct.unpack("!H", payload[:2]) == (4008,)
    assert payload[2:] == b"too slow: could not keep up"
    snapshots = [orjson.loads(p) for op, p in frames[1:-1]]
    assert {s["type"] for s in snapshots} == {"monitoring_snapshot"}
    assert all(len(s["data"]["machines"]) == FLEET for s in snapshots)
    # it missed snapshots; the healthy reader got every tick, before, during and after
    await _eventually(lambda: len(fanout.subscribers()) == 1, what="the slow one gone")
    await healthy.wait_for(lambda m: m["type"] == "monitoring_snapshot"
                           and m["data"]["seq"] >= seq_at_close + 5, "five more snapshots")
    seqs = [s["data"]["seq"] for s in healthy.of("monitoring_snapshot")]
    assert seqs == list(range(seqs[0], seqs[-1] + 1))
    assert len(snapshots) < seq_at_close - seqs[0]
    assert all(len(s["data"]["machines"]) == FLEET for s in healthy.of("monitoring_snapshot"))
    assert fanout.slow_closes == 1
    assert not healthy.task.done()


async def test_a_closed_reader_that_still_reads_nothing_is_dropped(make_app, aiohttp_client,
                                                                   accounts):
    client = await aiohttp_client(make_app(**SLOW))
    admin = await Api.login(client, await accounts.user("root-admin"))
    fanout = client.app[FANOUT]
    await _big_fleet(client, admin)
    sockets = client.app[DASHBOARD_SOCKETS]
    async with _stuck_reader(client, admin.token) as sock:
        await _eventually(lambda: fanout.slow_closes == 1, what="the slow reader closed")
        # the close frame waits behind a full buffer; the connection is dropped anyway
        await _eventually(lambda: sockets.count == 0 and not fanout.subscribers(),
                          timeout_s=fanout_module.ABORT_AFTER_S + DEADLINE_S,
                          what="the socket dropped")
        data, _ = await _read_all(sock)
    assert orjson.loads(_frames(data)[0][1])["type"] == "welcome"


async def test_shutdown_closes_every_dashboard_with_1001(client, admin, accounts, connect):
    alice = await accounts.customer("alice", "Tenant A")
    everyone = await connect(client, admin.token)
    a = await connect(client, (await Api.login(client, alice)).token)
    # one still authenticating: no token yet
    pending = await client.ws_connect("/ws/connect")
    await _eventually(lambda: len(client.app[FANOUT].subscribers()) == 2, what="subscribed")
    closing = asyncio.create_task(client.server.close())
    assert await everyone.closed() == 1001
    assert await a.closed() == 1001
    async with asyncio.timeout(DEADLINE_S):
        message = await pending.receive()
    assert (message.type, message.data) == (WSMsgType.CLOSE, 1001)
    async with asyncio.timeout(DEADLINE_S):
        await closing
    assert client.app[FANOUT].subscribers() == []


def _metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


async def test_metrics_expose_the_dashboard_fanout(client, admin, accounts, connect, scrape):
    alice = await accounts.customer("alice", "Tenant A")
    await connect(client, admin.token)
    await connect(client, (await Api.login(client, alice)).token)
    await connect(client, (await Api.login(client, alice)).token)
    await asyncio.sleep(3 * SNAPSHOT_S)  # a few ticks of each kind
    values = _metrics(await scrape(client))
    assert values[("remotegpu_ws_connections", (("role", "admin"),))] == 1
    assert values[("remotegpu_ws_connections", (("role", "customer"),))] == 2
    assert values[("remotegpu_ws_sockets", ())] == 3
    assert values[("remotegpu_ws_frames_sent_total", ())] >= 3  # the admin's snapshots
    assert values[("remotegpu_ws_frames_skipped_total", ())] == 0
    assert values[("remotegpu_ws_slow_closes_total", ())] == 0
    for kind in ("snapshot", "update"):
        assert values[("remotegpu_ws_tick_seconds_count", (("kind", kind),))] >= 2
        assert ("remotegpu_ws_tick_seconds_bucket", (("kind", kind), ("le", "+Inf"))) in values
        lag = values[("remotegpu_ws_fanout_lag_seconds", (("kind", kind),))]
        assert 0 <= lag < 5
