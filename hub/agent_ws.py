"""``/ws/agent``: the streaming agent protocol (CONTRACT.md §6).

The agent is authenticated before the upgrade (its token names the machine). It sends
``hello`` (refines the GPU inventory), ``metrics`` frames and ``job_update`` messages; the
hub pushes ``command`` messages. A bad message is answered with an ``error`` message and
never stored; only a flood of them (``FLOOD_LIMIT`` within ``FLOOD_WINDOW_S``) closes the
socket. A second connection for the same machine replaces the first.

Flow control (hub/flow.py): while the telemetry queue is above its mark, a socket with a
metrics frame to process is not read until the flow opens again (its transport paused, so
TCP slows the agent, which keeps its samples). Sockets take turns: each processes at most
``TURN_FRAMES`` messages before letting the others run, so a flood from some agents cannot
starve the rest, and a small receive buffer bounds what is read ahead of the flow. The
hub pings idle sockets itself, not with aiohttp's heartbeat: that one would take a socket
the hub paused for a dead one.

Shutdown: every agent gets a 1001 close frame at once, and its handler goes on processing
what the agent sent until the agent's close reply (at most ``close_wait_s``), so a frame
that reached the hub is stored, or refused with an error, never lost in the handshake.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import WSCloseCode, WSMsgType, web
from pydantic import ValidationError

from hub.dispatcher import Dispatcher
from hub.ingest import Ingest
from hub.protocol import (
    ABORT_AFTER_S,
    CLOSE_ABUSE,
    DEPENDENCY_ERRORS,
    Strikes,
    close_frame,
    error_message,
    ping_frame,
)
from services.agents import AgentAuth, AgentIdentity
from services.errors import Overloaded, ServiceError
from services.frames import Hello, WsJobUpdate, checked_metrics
from services.ids import JOB, parse_id
from services.jobs import JobService

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 256 * 1024
CLOSE_REPLACED = 4000
CLOSE_UNAUTHENTICATED = 4001
TURN_FRAMES = 4
# What the kernel holds for one agent socket (it doubles the value): an agent sends a few
# hundred bytes every few seconds, and a flooding one cannot run far ahead of the flow.
RECEIVE_BUFFER_BYTES = 32 * 1024
SHUTTING_DOWN = "hub shutting down"


@dataclass(eq=False, slots=True)
class AgentConn:
    """One agent socket."""

    machine_id: str
    ws: web.WebSocketResponse
    request: web.Request
    heard: float  # loop time of the last message, or of the end of a hold
    done: asyncio.Future[None]
    pinged: float = 0.0  # loop time of the last ping the watchdog sent
    held: bool = False  # waiting for the flow, not read
    closing: bool = False  # our close frame is sent: no more frames from us
    push: Any = field(default=None)


def _limit_receive_buffer(transport: asyncio.BaseTransport | None) -> None:
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)


def _pydantic_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
            for e in exc.errors(include_url=False, include_input=False)]


class AgentSockets:
    """The agent sockets of this process."""

    def __init__(self, *, ingest: Ingest, dispatcher: Dispatcher, jobs: JobService,
                 auth: AgentAuth, ping_interval_s: float) -> None:
        self._ingest = ingest
        self._dispatcher = dispatcher
        self._jobs = jobs
        self._auth = auth
        self._ping_interval_s = ping_interval_s
        self._open: dict[str, AgentConn] = {}
        self._watchdog: asyncio.Task[None] | None = None
        self._closing = False
        self.bad_messages = 0
        self.dead = 0

    @property
    def count(self) -> int:
        return len(self._open)

    def start(self) -> None:
        self._watchdog = asyncio.create_task(self._watch(), name="agent-sockets-watchdog")

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)

    async def serve(self, request: web.Request, agent: AgentIdentity) -> web.WebSocketResponse:
        if self._closing:
            raise Overloaded("the hub is shutting down; connect to another one", 1)
        ws = web.WebSocketResponse(autoping=False, max_msg_size=MAX_MESSAGE_BYTES,
                                   compress=False)
        await ws.prepare(request)
        _limit_receive_buffer(request.transport)
        loop = asyncio.get_running_loop()
        conn = AgentConn(agent.machine_id, ws, request, loop.time(), loop.create_future())
        previous = self._open.get(agent.machine_id)
        self._open[agent.machine_id] = conn
        if previous is not None:
            self._close_soon(previous, CLOSE_REPLACED, "replaced by a new connection")

        async def push(message: dict[str, Any]) -> None:
            if not conn.closing:
                await ws.send_str(orjson.dumps(message).decode())

        conn.push = push
        self._dispatcher.connected(agent.machine_id, push)
        try:
            await self._receive(conn, agent)
        finally:
            self._dispatcher.disconnected(agent.machine_id, push)
            if self._open.get(agent.machine_id) is conn:
                del self._open[agent.machine_id]
            conn.done.set_result(None)
        return ws

    async def _receive(self, conn: AgentConn, agent: AgentIdentity) -> None:
        ws = conn.ws
        loop = asyncio.get_running_loop()
        strikes = Strikes()
        turn = 0
        while True:
            message = await ws.receive()
            conn.heard = loop.time()
            if message.type is WSMsgType.TEXT:
                reply = await self._handle(conn, agent, message.data)
                if reply is not None and not conn.closing:
                    text, agents_fault = reply
                    await ws.send_str(text)
                    if agents_fault:
                        self.bad_messages += 1
                        if strikes.add():
                            await ws.close(code=CLOSE_ABUSE, message=b"too many bad messages")
                            return
                turn += 1
                if turn == TURN_FRAMES:
                    turn = 0
                    await asyncio.sleep(0)  # the other sockets' turn
            elif message.type is WSMsgType.PING:
                if not conn.closing:
                    await ws.pong(message.data)
            elif message.type not in (WSMsgType.PONG, WSMsgType.BINARY):
                return  # closed (by either side) or broken

    async def _handle(self, conn: AgentConn, agent: AgentIdentity, text: str
                      ) -> tuple[str, bool] | None:
        """None when the message was fine, else the reply to send and whether it was the
        agent's fault (a refusal for want of room is not)."""
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            return error_message("invalid_json", "message is not JSON"), True
        kind = data.get("type") if isinstance(data, dict) else None
        try:
            if kind == "metrics":
                if not self._ingest.flow.is_open:
                    await self._hold(conn)
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
                                         f"{agent.machine_id}, not {hello.machine_id}"), True
                await self._auth.refine_gpus(agent.machine_id, [
                    (g.index, g.uuid, g.model, g.memory_total) for g in hello.gpus
                    if g.index < agent.gpu_count])
            else:
                return error_message("unknown_type",
                                     "type must be hello, metrics or job_update"), True
        except ValidationError as exc:
            return error_message(f"invalid_{kind}", f"invalid {kind} message",
                                 _pydantic_errors(exc)), True
        except Overloaded as exc:
            return error_message("unavailable", exc.message,
                                 retry_after=exc.retry_after_s), False
        except DEPENDENCY_ERRORS:
            return error_message("unavailable", "the hub cannot store this now; send it "
                                 "again", retry_after=1), False
        except ServiceError as exc:
            errors = (exc.data or {}).get("errors") if isinstance(exc.data, dict) else None
            return error_message(f"invalid_{kind}" if exc.code < 40100 else "rejected",
                                 exc.message, errors), True
        return None

    async def _hold(self, conn: AgentConn) -> None:
        """Stop reading this socket until the flow opens.

        The transport is paused directly, not through the protocol: aiohttp pauses the
        protocol itself when its message queue is full and resumes it as the queue
        drains. Resuming over its pause would let every later read pile up, unparsed, in
        the reader's tail (no bound, and re-sliced on each drain: memory and CPU grow
        with the flood), so the transport is resumed only when aiohttp holds no pause.
        """
        transport = conn.request.transport
        protocol = conn.request.protocol
        conn.held = True
        if transport is not None:
            transport.pause_reading()
        try:
            await self._ingest.flow.wait(conn.machine_id)
        finally:
            conn.held = False
            conn.heard = asyncio.get_running_loop().time()
            if transport is not None and not transport.is_closing() \
                    and not protocol._reading_paused:
                transport.resume_reading()

    async def _watch(self) -> None:
        """Ping sockets silent for an interval; drop those that sent nothing within half
        an interval of their ping. A held socket is not judged: the hub is the one not
        listening."""
        interval = self._ping_interval_s
        ping = ping_frame()
        while True:
            await asyncio.sleep(interval / 4)
            now = asyncio.get_running_loop().time()
            for conn in list(self._open.values()):
                transport = conn.request.transport
                if conn.held or conn.closing or transport is None or transport.is_closing():
                    continue
                if conn.pinged > conn.heard:
                    if now - conn.pinged >= interval / 2:
                        self.dead += 1
                        log.info("agent socket answered no ping; dropped", extra={
                            "machine_id": conn.machine_id,
                            "silent_s": round(now - conn.heard, 1)})
                        transport.abort()
                elif now - conn.heard >= interval:
                    conn.pinged = now
                    transport.write(ping)

    def close_machine(self, machine_id: str, code: int, reason: str) -> None:
        conn = self._open.get(machine_id)
        if conn is not None:
            self._close_soon(conn, code, reason)

    async def close_all(self, timeout_s: float) -> None:
        """Shutdown: a 1001 close frame to every agent now, and frames held back by the
        flow control are taken after all (the writer keeps them until it stops). Each
        handler goes on with what its agent still sends until the agent's close reply,
        for at most ``timeout_s``; sockets still open then are dropped."""
        self._closing = True
        self._ingest.flow.release()
        conns = list(self._open.values())
        for conn in conns:
            self._close_soon(conn, WSCloseCode.GOING_AWAY, SHUTTING_DOWN, abort_after_s=None)
        pending = [conn.done for conn in conns if not conn.done.done()]
        if pending:
            await asyncio.wait(pending, timeout=max(timeout_s, 0.0))
        for conn in conns:
            transport = conn.request.transport
            if transport is not None and not transport.is_closing():
                transport.abort()

    def _close_soon(self, conn: AgentConn, code: int, reason: str, *,
                    abort_after_s: float | None = ABORT_AFTER_S) -> None:
        """Send the close frame and stop sending; the handler reads on until the agent's
        close reply (the connection is dropped after ``abort_after_s`` if it never
        comes)."""
        if conn.closing:
            return
        conn.closing = True
        self._dispatcher.disconnected(conn.machine_id, conn.push)
        transport = conn.request.transport
        if transport is None or transport.is_closing():
            return
        transport.write(close_frame(code, reason))
        if abort_after_s is not None:
            asyncio.get_running_loop().call_later(abort_after_s, transport.abort)
