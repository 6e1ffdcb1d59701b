"""``/ws/agent``: the streaming agent protocol (CONTRACT.md §6).

The agent is authenticated before the upgrade (its token names the machine). It sends
``hello`` (refines the GPU inventory), ``metrics`` frames and ``job_update`` messages; the
hub pushes ``command`` messages. A bad message is answered with an ``error`` message and
never stored; only a flood of them (``FLOOD_LIMIT`` within ``FLOOD_WINDOW_S``) closes the
socket. A second connection for the same machine replaces the first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from aiohttp import WSCloseCode, WSMsgType, web
from pydantic import ValidationError

from hub.dispatcher import Dispatcher
from hub.ingest import Ingest
from hub.protocol import CLOSE_ABUSE, DEPENDENCY_ERRORS, Strikes, error_message
from services.agents import AgentAuth, AgentIdentity
from services.errors import ServiceError
from services.frames import Hello, WsJobUpdate, checked_metrics
from services.ids import JOB, parse_id
from services.jobs import JobService

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 256 * 1024
CLOSE_REPLACED = 4000
CLOSE_UNAUTHENTICATED = 4001
UNAVAILABLE = error_message("unavailable", "the hub cannot store this now; send it again")


def _pydantic_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
            for e in exc.errors(include_url=False, include_input=False)]


class AgentSockets:
    """The agent sockets of this process."""

    def __init__(self, *, ingest: Ingest, dispatcher: Dispatcher, jobs: JobService,
                 auth: AgentAuth) -> None:
        self._ingest = ingest
        self._dispatcher = dispatcher
        self._jobs = jobs
        self._auth = auth
        self._open: dict[str, web.WebSocketResponse] = {}
        self.bad_messages = 0

    @property
    def count(self) -> int:
        return len(self._open)

    async def serve(self, request: web.Request, agent: AgentIdentity) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_MESSAGE_BYTES,
                                   compress=False)
        await ws.prepare(request)
        machine_id = agent.machine_id
        previous = self._open.get(machine_id)
        self._open[machine_id] = ws
        if previous is not None:
            await previous.close(code=CLOSE_REPLACED, message=b"replaced by a new connection")

        async def push(message: dict[str, Any]) -> None:
            await ws.send_str(orjson.dumps(message).decode())

        self._dispatcher.connected(machine_id, push)
        strikes = Strikes()
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue  # pings are answered by aiohttp; binary frames are not ours
                reply = await self._handle(agent, message.data)
                if reply is None:
                    continue
                await ws.send_str(reply)
                if reply is UNAVAILABLE:
                    continue  # not the agent's fault
                self.bad_messages += 1
                if strikes.add():
                    await ws.close(code=CLOSE_ABUSE, message=b"too many bad messages")
                    break
        finally:
            self._dispatcher.disconnected(machine_id, push)
            if self._open.get(machine_id) is ws:
                del self._open[machine_id]
        return ws

    async def _handle(self, agent: AgentIdentity, text: str) -> str | None:
        """None when the message was fine, else the error reply."""
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            return error_message("invalid_json", "message is not JSON")
        kind = data.get("type") if isinstance(data, dict) else None
        try:
            if kind == "metrics":
                received = time.time()
                frame = checked_metrics(data, now=received, gpu_count=agent.gpu_count)
                self._ingest.accept(agent.machine_id, frame, received)
            elif kind == "job_update":
                update = WsJobUpdate.model_validate(data)
                await self._jobs.agent_update(
                    agent.machine_id, parse_id(JOB, update.job_id, "job"), update.status,
                    result=update.result, error=update.error)
            elif kind == "hello":
                hello = Hello.model_validate(data)
                if hello.machine_id != agent.machine_id:
                    return error_message("wrong_machine", "this token speaks for "
                                  f"{agent.machine_id}, not {hello.machine_id}")
                await self._auth.refine_gpus(agent.machine_id, [
                    (g.index, g.uuid, g.model, g.memory_total) for g in hello.gpus
                    if g.index < agent.gpu_count])
            else:
                return error_message("unknown_type",
                                     "type must be hello, metrics or job_update")
        except ValidationError as exc:
            return error_message(f"invalid_{kind}", f"invalid {kind} message",
                                 _pydantic_errors(exc))
        except DEPENDENCY_ERRORS:
            return UNAVAILABLE
        except ServiceError as exc:
            errors = (exc.data or {}).get("errors") if isinstance(exc.data, dict) else None
            return error_message(f"invalid_{kind}" if exc.code < 40100 else "rejected", exc.message,
                          errors)
        return None

    async def close_machine(self, machine_id: str, code: int, reason: str) -> None:
        ws = self._open.get(machine_id)
        if ws is not None:
            await ws.close(code=code, message=reason.encode())

    async def close_all(self) -> None:
        await asyncio.gather(*(ws.close(code=WSCloseCode.GOING_AWAY, message=b"hub shutting down")
                               for ws in list(self._open.values())), return_exceptions=True)
