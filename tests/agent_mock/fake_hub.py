"""A stand-in hub for the simulator's tests: just enough of CONTRACT.md §2, §3 and §6
(login, machine create with 409 on duplicates, token rotation, the agent endpoints),
recording what the agents send. No database, no server code."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

ADMIN_TOKEN = "fake-admin-access-token"
CREATE_FIELDS = {"id": str, "name": str, "region": str, "ip": str, "gpu_model": str,
                 "gpu_count": int, "gpu_memory_gb": int, "cpu_info": str, "memory_total": int,
                 "disk_total": int, "ssh_host": str, "ssh_port": int}


def envelope(data: Any = None, *, status: int = 200, code: int = 0, msg: str = "ok"
             ) -> web.Response:
    return web.Response(status=status, content_type="application/json",
                        body=orjson.dumps({"code": code, "msg": msg, "data": data,
                                           "traceId": secrets.token_hex(8)}))


@dataclass
class FakeHub:
    admin_user: str = "admin"
    admin_password: str = "admin-password"
    url: str = ""
    machines: dict[str, dict[str, Any]] = field(default_factory=dict)
    agent_tokens: dict[str, str] = field(default_factory=dict)
    """token -> machine id"""
    logins: int = 0
    created: list[str] = field(default_factory=list)
    rotated: list[str] = field(default_factory=list)
    messages: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    """Everything each machine sent over /ws/agent, in order."""
    frames: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    """(loop time, machine id, frame) for every frame, both transports."""
    job_updates: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    """(machine id, job id, update), both transports."""
    connections: Counter[str] = field(default_factory=Counter)
    ws_commands: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Commands sent to a machine once, right after its hello."""
    http_commands: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Commands returned once, with a machine's next heartbeat."""
    drop_after: int | None = None
    """Close each machine's first socket after this many frames."""
    error_after_hello: bool = False
    failing_heartbeats: int = 0
    """Answer 503 to this many heartbeats (of any machine) first."""
    heartbeats: int = 0
    sockets: set[web.WebSocketResponse] = field(default_factory=set)

    def app(self) -> web.Application:
        app = web.Application()
        app.on_shutdown.append(self._close_sockets)
        app.router.add_post("/api/v1/auth/login", self.login)
        app.router.add_post("/api/v1/admin/machines", self.create_machine)
        app.router.add_post("/api/v1/admin/machines/{id}/agent-token", self.rotate)
        app.router.add_get("/ws/agent", self.ws_agent)
        app.router.add_post("/api/v1/agent/heartbeat", self.heartbeat)
        app.router.add_post("/api/v1/agent/jobs/{job_id}", self.job_update)
        return app

    async def _close_sockets(self, app: web.Application) -> None:
        for ws in list(self.sockets):
            await ws.close(code=1001, message=b"hub shutting down")

    def frames_of(self, machine_id: str) -> list[dict[str, Any]]:
        return [frame for _, mid, frame in self.frames if mid == machine_id]

    def updates_of(self, job_id: str) -> list[dict[str, Any]]:
        return [update for _, jid, update in self.job_updates if jid == job_id]

    # -- admin -------------------------------------------------------------------------

    async def login(self, request: web.Request) -> web.Response:
        body = await request.json()
        if (body.get("username"), body.get("password")) != (self.admin_user,
                                                             self.admin_password):
            return envelope(status=401, code=40103, msg="wrong username or password")
        self.logins += 1
        return envelope({"access_token": ADMIN_TOKEN, "refresh_token": "r",
                         "expires_in": 3600, "token_type": "Bearer"})

    def _is_admin(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {ADMIN_TOKEN}"

    def _new_token(self, machine_id: str) -> str:
        for token, owner in list(self.agent_tokens.items()):
            if owner == machine_id:
                del self.agent_tokens[token]
        token = secrets.token_urlsafe(24)
        self.agent_tokens[token] = machine_id
        return token

    async def create_machine(self, request: web.Request) -> web.Response:
        if not self._is_admin(request):
            return envelope(status=401, code=40101, msg="missing or invalid token")
        body = await request.json()
        errors = [{"field": name, "message": f"required {kind.__name__}"}
                  for name, kind in CREATE_FIELDS.items()
                  if not isinstance(body.get(name), kind)]
        if errors:
            return envelope({"errors": errors}, status=400, code=40001, msg="invalid")
        if body["id"] in self.machines:
            return envelope(status=409, code=40902, msg="a machine with this id already exists")
        # Let concurrent creates overlap, as a real database round trip would.
        await asyncio.sleep(0)
        self.machines[body["id"]] = body
        self.created.append(body["id"])
        return envelope({**body, "status": "offline", "allocation_status": "idle",
                         "agent_token": self._new_token(body["id"])})

    async def rotate(self, request: web.Request) -> web.Response:
        if not self._is_admin(request):
            return envelope(status=401, code=40101, msg="missing or invalid token")
        machine_id = request.match_info["id"]
        if machine_id not in self.machines:
            return envelope(status=404, code=40401, msg="not found")
        self.rotated.append(machine_id)
        return envelope({"agent_token": self._new_token(machine_id)})

    # -- agents ------------------------------------------------------------------------

    def _agent(self, request: web.Request) -> str | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return self.agent_tokens.get(token) if scheme == "Bearer" else None

    async def ws_agent(self, request: web.Request) -> web.StreamResponse:
        machine_id = self._agent(request)
        if machine_id is None:
            return envelope(status=401, code=40101, msg="invalid agent token")
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        self.sockets.add(ws)
        try:
            await self._talk(ws, machine_id)
        finally:
            self.sockets.discard(ws)
        return ws

    async def _talk(self, ws: web.WebSocketResponse, machine_id: str) -> None:
        self.connections[machine_id] += 1
        first = self.connections[machine_id] == 1
        frames_here = 0
        loop = asyncio.get_running_loop()
        async for msg in ws:
            message = orjson.loads(msg.data)
            self.messages[machine_id].append(message)
            kind = message.get("type")
            if kind == "hello":
                for command in self.ws_commands.pop(machine_id, []):
                    await ws.send_str(orjson.dumps({"type": "command", **command}).decode())
                if self.error_after_hello:
                    await ws.send_str('{"type":"error","code":40001,"message":"try again"}')
            elif kind == "metrics":
                frame = {k: v for k, v in message.items() if k != "type"}
                self.frames.append((loop.time(), machine_id, frame))
                frames_here += 1
                if first and self.drop_after is not None and frames_here >= self.drop_after:
                    await ws.close(code=1011, message=b"hub restarting")
            elif kind == "job_update":
                update = {k: v for k, v in message.items() if k not in ("type", "job_id")}
                self.job_updates.append((machine_id, message["job_id"], update))

    async def heartbeat(self, request: web.Request) -> web.Response:
        machine_id = self._agent(request)
        if machine_id is None:
            return envelope(status=401, code=40101, msg="invalid agent token")
        self.heartbeats += 1
        if self.failing_heartbeats > 0:
            self.failing_heartbeats -= 1
            return envelope(status=503, code=50301, msg="database unavailable")
        frame = orjson.loads(await request.read())
        self.frames.append((asyncio.get_running_loop().time(), machine_id, frame))
        return envelope({"commands": self.http_commands.pop(machine_id, [])})

    async def job_update(self, request: web.Request) -> web.Response:
        machine_id = self._agent(request)
        if machine_id is None:
            return envelope(status=401, code=40101, msg="invalid agent token")
        self.job_updates.append((machine_id, request.match_info["job_id"],
                                 orjson.loads(await request.read())))
        return envelope(None)
