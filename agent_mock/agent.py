"""One simulated agent: the machine's side of CONTRACT.md §6, over WebSocket or HTTP.

Each agent is one task (plus, while a socket is open, a small sender task, and one task
per command being carried out). Frames keep the agent's phase within the interval, so a
fleet started at once stays spread out. Lost connections and 5xx answers are retried
with exponential backoff and full jitter; a 401 means the token is no longer valid and
the agent stops.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from agent_mock.counters import Counters
from agent_mock.fleet import MachineSpec
from agent_mock.options import Options
from agent_mock.telemetry import MachineSim

log = logging.getLogger("agent_mock")

AGENT_VERSION = "agent-mock/1"
# How long commands take, in seconds, before ``job_delay_scale``; ±30 % jitter.
JOB_DELAYS = {"reclaim": 3.0, "ssh_reset": 1.0, "mount_dataset": 2.0, "task_start": 1.0,
              "task_stop": 1.0}
WS_TIMEOUT = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=1.0)
MAX_MESSAGE = 1 << 20
# Jobs remembered per agent, so a command the hub sends again is not run twice.
_KEEP_JOBS = 32
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_JOB_POST_ATTEMPTS = 6


class Unauthorized(Exception):
    """The hub refused the agent token."""


@dataclass
class Fleet:
    """What every agent of a run shares."""

    session: aiohttp.ClientSession
    options: Options
    counters: Counters
    rng: random.Random
    warnings_left: int = 20
    """A fleet in trouble would flood the log: the first warnings are logged, later ones
    at debug level (the counters keep the totals)."""

    @property
    def hub(self) -> str:
        return self.options.hub.rstrip("/")

    def note(self, machine_id: str, message: str) -> None:
        if self.warnings_left > 0:
            self.warnings_left -= 1
            suffix = "" if self.warnings_left else " (further warnings at debug level)"
            log.warning("%s: %s%s", machine_id, message, suffix)
        else:
            log.debug("%s: %s", machine_id, message)


class Agent:
    __slots__ = ("_headers", "_jobs", "_pending", "_tasks", "_ws", "attempt", "fleet",
                 "next_at", "phase", "quiet", "silent_at", "sim", "spec")

    def __init__(self, fleet: Fleet, spec: MachineSpec, token: str, sim: MachineSim, *,
                 phase: float, silent_after: float | None) -> None:
        self.fleet = fleet
        self.spec = spec
        self.sim = sim
        self.phase = phase
        self.silent_at = silent_after
        self.quiet = False
        # Loop-clock times from here on, set when the agent starts.
        self.next_at = 0.0
        self.attempt = 0
        self._headers = {"Authorization": f"Bearer {token}",
                         "Content-Type": "application/json"}
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._pending: list[bytes] = []
        self._jobs: dict[str, dict[str, Any] | None] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        self.next_at = start + self.phase
        if self.silent_at is not None:
            self.silent_at += start + self.phase
        counters = self.fleet.counters
        try:
            await asyncio.sleep(self.phase)
            if self.fleet.options.transport == "ws":
                await self._run_ws()
            else:
                await self._run_http()
        except Unauthorized:
            counters.stopped += 1
            self.fleet.note(self.spec.id,
                            "the hub refused the agent token (401); this machine stops")
        finally:
            for task in self._tasks:
                task.cancel()
            if self._tasks:
                await asyncio.wait(self._tasks)

    # -- WebSocket -------------------------------------------------------------------

    async def _run_ws(self) -> None:
        fleet = self.fleet
        url = fleet.hub + "/ws/agent"
        while True:
            try:
                async with fleet.session.ws_connect(
                        url, headers=self._headers, compress=0, autoping=True,
                        timeout=WS_TIMEOUT, max_msg_size=MAX_MESSAGE) as ws:
                    await self._ws_connection(ws)
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status == 401:
                    raise Unauthorized from None
                fleet.counters.errors += 1
                self._note(f"WebSocket upgrade refused: HTTP {exc.status}")
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                fleet.counters.errors += 1
                log.debug("%s: connection failed: %r", self.spec.id, exc)
            if self.quiet:
                # A hung agent does not come back.
                return
            fleet.counters.reconnects += 1
            await asyncio.sleep(fleet.options.backoff_delay(self.attempt))
            self.attempt += 1

    async def _ws_connection(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        counters = self.fleet.counters
        counters.connected += 1
        self._ws = ws
        sender = None
        try:
            await ws.send_frame(orjson.dumps({
                "type": "hello", "machine_id": self.spec.id, "agent_version": AGENT_VERSION,
                "gpus": self.sim.hello_gpus()}), aiohttp.WSMsgType.TEXT)
            while self._pending:
                await ws.send_frame(self._pending[0], aiohttp.WSMsgType.TEXT)
                del self._pending[0]
            sender = asyncio.create_task(self._send_frames(ws))
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    self._on_ws_message(msg.data)
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    counters.errors += 1
                    log.debug("%s: socket error: %r", self.spec.id, msg.data)
                    break
        finally:
            self._ws = None
            counters.connected -= 1
            if sender is not None:
                sender.cancel()
                await asyncio.wait({sender})

    async def _send_frames(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            while await self._wait_for_slot():
                frame = self.sim.frame(time.time())
                frame["type"] = "metrics"
                await ws.send_frame(orjson.dumps(frame), aiohttp.WSMsgType.TEXT)
                self.fleet.counters.frames += 1
                self.attempt = 0
        except (aiohttp.ClientError, OSError) as exc:
            # The reader sees the same loss and ends the connection.
            log.debug("%s: send failed: %r", self.spec.id, exc)
            await ws.close()

    def _on_ws_message(self, data: str) -> None:
        try:
            message = orjson.loads(data)
            kind = message["type"]
        except (orjson.JSONDecodeError, TypeError, KeyError):
            self.fleet.counters.errors += 1
            self._note(f"unreadable message from the hub: {data[:200]!r}")
            return
        if kind == "command":
            if not self.quiet:
                self._on_command(message)
        elif kind == "error":
            self.fleet.counters.errors += 1
            self._note(f"hub says: {data[:500]}")
        else:
            log.debug("%s: ignoring a %r message", self.spec.id, kind)

    # -- HTTP ------------------------------------------------------------------------

    async def _run_http(self) -> None:
        fleet = self.fleet
        counters = fleet.counters
        url = fleet.hub + "/api/v1/agent/heartbeat"
        reaching = False
        try:
            while await self._wait_for_slot():
                status, body = await self._post(url, self.sim.frame(time.time()))
                if status == 200:
                    counters.frames += 1
                    self.attempt = 0
                    if not reaching:
                        reaching = True
                        counters.connected += 1
                    for command in (body.get("data") or {}).get("commands") or ():
                        self._on_command(command)
                    continue
                if reaching:
                    reaching = False
                    counters.connected -= 1
                if status == 401:
                    raise Unauthorized
                counters.errors += 1
                if status is None or status in _RETRY_STATUSES:
                    counters.reconnects += 1
                    await asyncio.sleep(fleet.options.backoff_delay(self.attempt))
                    self.attempt += 1
                    # Retry at once with a fresh frame rather than wait for the next slot.
                    self.next_at = asyncio.get_running_loop().time()
                else:
                    self._note(f"heartbeat refused: HTTP {status}: {body.get('msg')}")
        finally:
            if reaching:
                counters.connected -= 1

    async def _post(self, url: str, payload: dict[str, Any]
                    ) -> tuple[int | None, dict[str, Any]]:
        """Status and decoded envelope; status None when the hub could not be reached."""
        try:
            async with self.fleet.session.post(url, data=orjson.dumps(payload),
                                               headers=self._headers) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.debug("%s: request failed: %r", self.spec.id, exc)
            return None, {}
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = {}
        return status, body if isinstance(body, dict) else {}

    # -- frames and commands ---------------------------------------------------------

    async def _wait_for_slot(self) -> bool:
        """Sleep until the next frame is due; False once the agent has gone silent."""
        loop = asyncio.get_running_loop()
        interval = self.fleet.options.interval
        now = loop.time()
        if now - self.next_at >= interval:
            # Whole slots missed (a reconnect, an overloaded loop) are skipped, not caught
            # up in a burst; the phase is kept.
            self.next_at = now + (self.next_at - now) % interval
        await asyncio.sleep(self.next_at - now)
        self.next_at += interval
        if self.quiet:
            return False
        if self.silent_at is not None and loop.time() >= self.silent_at:
            self.quiet = True
            self.fleet.counters.silent += 1
            log.debug("%s: going silent, as asked", self.spec.id)
            return False
        return True

    def _on_command(self, command: Any) -> None:
        job_id = command.get("job_id") if isinstance(command, dict) else None
        if not isinstance(job_id, str):
            self.fleet.counters.errors += 1
            self._note(f"command without a job id: {command!r}")
            return
        if job_id in self._jobs:
            outcome = self._jobs[job_id]
            if outcome is not None:
                # The hub missed our answer: repeat it.
                self._spawn(self._report(job_id, outcome))
            return
        self.fleet.counters.commands += 1
        self._jobs[job_id] = None
        if len(self._jobs) > _KEEP_JOBS:
            del self._jobs[next(iter(self._jobs))]
        params = command.get("params")
        self._spawn(self._carry_out(job_id, str(command.get("action")),
                                    params if isinstance(params, dict) else {}))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _carry_out(self, job_id: str, action: str, params: dict[str, Any]) -> None:
        await self._report(job_id, {"status": "running"})
        delay = JOB_DELAYS.get(action)
        if delay is None:
            outcome: dict[str, Any] = {"status": "failed",
                                       "error": f"agent-mock does not know {action!r}"}
        else:
            took = delay * self.fleet.options.job_delay_scale * self.fleet.rng.uniform(0.7, 1.3)
            await asyncio.sleep(took)
            outcome = {"status": "succeeded", "result": self._result(action, params, took)}
        if job_id in self._jobs:
            self._jobs[job_id] = outcome
        await self._report(job_id, outcome)
        self.fleet.counters.answered += 1

    def _result(self, action: str, params: dict[str, Any], took: float) -> dict[str, Any]:
        result: dict[str, Any] = {"duration_s": round(took, 3), "agent_version": AGENT_VERSION}
        if action == "reclaim":
            self.sim.set_busy(False)
            result.update(wiped=True, keys_reset=True)
        elif action == "ssh_reset":
            result.update(keys_reset=True, public_key_installed=bool(params.get("public_key")))
        elif action == "mount_dataset":
            result.update(mounted=True, mount_point=params.get("mount_point"))
        elif action == "task_start":
            self.sim.set_busy(True)
            result.update(pid=self.fleet.rng.randint(1000, 99999))
        elif action == "task_stop":
            self.sim.set_busy(False)
            result.update(exit_code=0)
        return result

    async def _report(self, job_id: str, update: dict[str, Any]) -> None:
        """Send a job update; over WebSocket one that finds no open socket goes out right
        after the next hello."""
        if self.fleet.options.transport == "http":
            await self._post_update(job_id, update)
            return
        payload = orjson.dumps({"type": "job_update", "job_id": job_id, **update})
        ws = self._ws
        if ws is None or ws.closed:
            self._pending.append(payload)
            return
        try:
            await ws.send_frame(payload, aiohttp.WSMsgType.TEXT)
        except (aiohttp.ClientError, OSError):
            self._pending.append(payload)

    async def _post_update(self, job_id: str, update: dict[str, Any]) -> None:
        url = f"{self.fleet.hub}/api/v1/agent/jobs/{job_id}"
        for attempt in range(_JOB_POST_ATTEMPTS):
            status, body = await self._post(url, update)
            if status == 200:
                return
            self.fleet.counters.errors += 1
            if status is not None and status not in _RETRY_STATUSES:
                self._note(f"job update for {job_id} refused: HTTP {status}: {body.get('msg')}")
                return
            await asyncio.sleep(self.fleet.options.backoff_delay(attempt))
        self._note(f"gave up reporting {job_id} after {_JOB_POST_ATTEMPTS} attempts")

    def _note(self, message: str) -> None:
        self.fleet.note(self.spec.id, message)
