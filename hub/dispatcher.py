"""Jobs to agents. Every process knows which machines have pending jobs (a set kept
current by job_queued events and a periodic re-read); an agent gets its commands in the
heartbeat reply (HTTP) or pushed on its socket (WebSocket) the moment a job is queued.
Claiming is an atomic pending -> sent update, so each attempt reaches the agent once even
when several processes race."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from services.job_events import command
from services.jobs import JobService

log = logging.getLogger(__name__)

Push = Callable[[dict[str, Any]], Awaitable[None]]


class Dispatcher:
    def __init__(self, jobs: JobService) -> None:
        self._jobs = jobs
        self._pending: set[str] = set()
        self._sockets: dict[str, Push] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def connected(self, machine_id: str, push: Push) -> None:
        self._sockets[machine_id] = push
        self.offer(machine_id)

    def disconnected(self, machine_id: str, push: Push) -> None:
        if self._sockets.get(machine_id) is push:
            del self._sockets[machine_id]

    def on_job_queued(self, data: dict[str, Any]) -> None:
        self._pending.add(data["machine_id"])
        self.offer(data["machine_id"])

    def offer(self, machine_id: str) -> None:
        """Push pending jobs now if the machine's socket is on this process."""
        if machine_id in self._sockets and machine_id in self._pending:
            task = asyncio.create_task(self._push(machine_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def commands_for(self, machine_id: str) -> list[dict[str, Any]]:
        """Claim the machine's pending jobs (the heartbeat reply)."""
        if machine_id not in self._pending:
            return []
        self._pending.discard(machine_id)
        return [command(job) for job in await self._jobs.claim(machine_id)]

    async def _push(self, machine_id: str) -> None:
        try:
            for cmd in await self.commands_for(machine_id):
                push = self._sockets.get(machine_id)
                if push is None:
                    log.warning("agent left before its command was sent; the job will time "
                                "out", extra={"machine_id": machine_id, "job_id": cmd["job_id"]})
                    continue
                await push({"type": "command", **cmd})
        except Exception:
            log.exception("pushing commands failed", extra={"machine_id": machine_id})

    async def refresh(self) -> None:
        """Re-read which machines have pending jobs: catches jobs whose event was lost
        (Redis down, another process restarting). Run periodically by every process."""
        self._pending = await self._jobs.pending_machines()
        for machine_id in list(self._pending):
            self.offer(machine_id)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
