"""Shutdown and crashes lose nothing (issue 10, point 2), on a real ``remotegpu serve``:
SIGTERM with agents streaming and dashboards open closes every socket with 1001 at once,
stores every frame that reached the hub (or refuses it to the agent), and exits within
``REMOTEGPU_SHUTDOWN_GRACE_S`` even when PostgreSQL does not answer; SIGKILL right after
acknowledged writes finds the audit record of every one of them."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType

from tests.helpers import PASSWORD

GRACE_S = 6.0
AGENTS = 20
FRAME_EVERY_S = 0.02  # 50 frames/s per agent, 1,000/s in all


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Hub:
    proc: asyncio.subprocess.Process
    base: str
    stderr: list[bytes] = field(default_factory=list)

    async def stop(self, sig: int, guard_s: float = GRACE_S + 10) -> float:
        """Send ``sig``; seconds until the process exited."""
        sent = time.monotonic()
        self.proc.send_signal(sig)
        await asyncio.wait_for(self.proc.wait(), guard_s)
        return time.monotonic() - sent

    def log(self) -> list[dict]:
        return [orjson.loads(line) for line in b"".join(self.stderr).splitlines()
                if line.startswith(b"{")]


@pytest.fixture
async def start_hub(settings, db):
    started: list[Hub] = []

    async def start(**env: str) -> Hub:
        port = _free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hub.cli", "serve", "--port", str(port),
            env={**os.environ,
                 "REMOTEGPU_DATABASE_URL": settings.database_url,
                 "REMOTEGPU_REDIS_URL": settings.redis_url,
                 "REMOTEGPU_REDIS_PREFIX": settings.redis_prefix,
                 "REMOTEGPU_JWT_SECRET": settings.jwt_secret,
                 "REMOTEGPU_ARGON2_TIME_COST": "1", "REMOTEGPU_ARGON2_MEMORY_KIB": "1024",
                 "REMOTEGPU_SHUTDOWN_GRACE_S": str(GRACE_S), "REMOTEGPU_METRICS_PORT": "0",
                 **env},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        hub = Hub(proc, f"http://127.0.0.1:{port}")
        asyncio.get_running_loop().create_task(_drain(proc, hub.stderr))
        started.append(hub)
        async with aiohttp.ClientSession() as session:
            for _ in range(150):
                try:
                    async with session.get(hub.base + "/healthz") as resp:
                        if resp.status == 200:
                            return hub
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError("the hub did not start: " + b"".join(hub.stderr).decode()[-2000:])

    yield start
    for hub in started:
        if hub.proc.returncode is None:
            hub.proc.kill()
            await hub.proc.wait()


async def _drain(proc: asyncio.subprocess.Process, into: list[bytes]) -> None:
    assert proc.stderr is not None
    while line := await proc.stderr.readline():
        into.append(line)


async def _admin_token(session: aiohttp.ClientSession, base: str, accounts) -> str:
    admin = await accounts.user("root-admin")
    async with session.post(base + "/api/v1/auth/login",
                            json={"username": admin.username, "password": PASSWORD}) as resp:
        return (await resp.json())["data"]["access_token"]


async def _machines(session, base: str, token: str, count: int) -> dict[str, str]:
    tokens = {}
    for i in range(count):
        spec = {"id": f"m{i:02d}", "name": f"m{i:02d}", "ip": "10.0.0.1", "gpu_model": "A100",
                "gpu_count": 2, "gpu_memory_gb": 80}
        async with session.post(base + "/api/v1/admin/machines", json=spec,
                                headers={"Authorization": f"Bearer {token}"}) as resp:
            body = await resp.json()
            assert resp.status == 200, body
            tokens[spec["id"]] = body["data"]["agent_token"]
    return tokens


@dataclass
class Agent:
    machine_id: str
    sent: list[float] = field(default_factory=list)  # the ts of every frame sent
    refused: int = 0
    close_code: int | None = None


def _metrics(ts: float) -> str:
    return orjson.dumps({"type": "metrics", "ts": ts, "cpu_util": 10.0, "mem_used": 10,
                         "mem_total": 64, "disk_used": 10, "disk_total": 100,
                         "gpus": [{"index": i, "util": 50.0, "mem_used": 100,
                                   "mem_total": 1000, "temp": 50.0, "power": 100.0}
                                  for i in range(2)]}).decode()


async def _stream(session, base: str, token: str, agent: Agent) -> None:
    """Send frames until the hub closes the socket; note every refusal it answers."""
    async with session.ws_connect(base.replace("http", "ws") + "/ws/agent",
                                  headers={"Authorization": f"Bearer {token}"}) as ws:

        async def read() -> None:
            async for message in ws:
                if message.type is WSMsgType.TEXT:
                    data = orjson.loads(message.data)
                    if data.get("type") == "error" and data["data"]["code"] == "unavailable":
                        agent.refused += 1

        reader = asyncio.create_task(read())
        while not ws.closed:
            ts = max(time.time(), agent.sent[-1] + 1e-4 if agent.sent else 0.0)
            try:
                await ws.send_str(_metrics(ts))
            except (aiohttp.ClientError, ConnectionError):
                break
            agent.sent.append(ts)
            await asyncio.sleep(FRAME_EVERY_S)
        await reader
        agent.close_code = ws.close_code


async def _dashboard(session, base: str, token: str, codes: list[int | None]) -> None:
    async with session.ws_connect(base.replace("http", "ws") + f"/ws/connect?token={token}"
                                  ) as ws:
        async for _ in ws:
            pass
        codes.append(ws.close_code)


@pytest.mark.telemetry
async def test_sigterm_closes_every_socket_stores_every_frame_and_exits_within_the_grace(
        start_hub, accounts, db):
    hub = await start_hub()
    async with aiohttp.ClientSession() as session:
        admin = await _admin_token(session, hub.base, accounts)
        tokens = await _machines(session, hub.base, admin, AGENTS)
        agents = [Agent(machine_id) for machine_id in tokens]
        dashboards: list[int | None] = []
        clients = [asyncio.create_task(_stream(session, hub.base, tokens[a.machine_id], a))
                   for a in agents]
        clients += [asyncio.create_task(_dashboard(session, hub.base, admin, dashboards))
                    for _ in range(3)]
        await asyncio.sleep(2.0)
        sent_before = {a.machine_id: list(a.sent) for a in agents}
        took = await hub.stop(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*clients), 10)
    assert hub.proc.returncode == 0
    assert took < GRACE_S
    assert [a.close_code for a in agents] == [1001] * AGENTS
    assert dashboards == [1001] * 3
    for agent in agents:
        stored = {row["time"].timestamp() for row in await db.fetch(
            "SELECT time FROM machine_metrics WHERE machine_id = $1", agent.machine_id)}
        assert len(sent_before[agent.machine_id]) > 50
        missing = [ts for ts in sent_before[agent.machine_id]
                   if not any(abs(ts - t) < 1e-5 for t in stored)]
        assert missing == [], f"{agent.machine_id}: frames sent before SIGTERM not stored"
        # After SIGTERM too: each frame the agent got out is stored or was refused to it,
        # but for its last one. aiohttp's client drops the TCP connection right after its
        # close reply, and a frame it sent a moment before is sometimes never read by the
        # hub (seen in about one run of three, always the agent's last frame).
        accounted = len(stored) + agent.refused
        assert accounted in (len(agent.sent), len(agent.sent) - 1), agent.machine_id
    failed = [line for line in hub.log() if line.get("msg") == "request"
              and line.get("status", 0) >= 500]
    assert failed == []
    assert not [line for line in hub.log() if line.get("msg", "").startswith(
        "telemetry rows lost")]


async def test_sigterm_exits_within_the_grace_while_postgres_does_not_answer(
        start_hub, accounts, pg_proxy, db):
    proxy, url = pg_proxy
    hub = await start_hub(REMOTEGPU_DATABASE_URL=url)
    async with aiohttp.ClientSession() as session:
        admin = await _admin_token(session, hub.base, accounts)
        tokens = await _machines(session, hub.base, admin, 3)
        agents = [Agent(machine_id) for machine_id in tokens]
        clients = [asyncio.create_task(_stream(session, hub.base, tokens[a.machine_id], a))
                   for a in agents]
        await asyncio.sleep(1.0)
        proxy.hold()  # packets held: every statement hangs
        await asyncio.sleep(1.0)
        took = await hub.stop(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*clients), 10)
    assert took < GRACE_S + 1  # the last stage may use the grace to the end
    assert [a.close_code for a in agents] == [1001] * 3
    # what PostgreSQL never took is said, with its count, not dropped silently
    lost = [line for line in hub.log() if line.get("msg", "").startswith("telemetry rows lost")]
    assert lost and lost[0]["rows"] > 0
    proxy.release()


async def test_sigkill_after_acknowledged_writes_leaves_the_audit_record_of_every_one(
        start_hub, accounts, db):
    hub = await start_hub(REMOTEGPU_AUDIT_FLUSH_INTERVAL_S="3600")
    async with aiohttp.ClientSession() as session:
        admin = await _admin_token(session, hub.base, accounts)
        tokens = await _machines(session, hub.base, admin, 50)  # each answered 200
    await hub.stop(signal.SIGKILL)
    assert hub.proc.returncode == -signal.SIGKILL
    records = await db.fetch("SELECT body->>'id' AS id, status FROM audit_logs "
                             "WHERE method = 'POST' AND path = '/api/v1/admin/machines'")
    assert sorted((r["id"], r["status"]) for r in records) == [(m, 200) for m in
                                                               sorted(tokens)]
