"""The ingest hot path: an accepted metrics frame updates the in-memory latest state, is
queued for Redis (pipelined) and for PostgreSQL (COPY batches), and feeds the alert rules.
``accept`` never awaits: a heartbeat is answered without waiting for any store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from hub.flow import IngestFlow
from hub.heartbeats import HeartbeatSink
from hub.state import LatestState, Sample
from hub.writer import TelemetryWriter
from services.alert_rules import Change, FrameRules
from services.alerts import AlertService
from services.cancel import cancel_within
from services.errors import Overloaded
from services.frames import Frame
from storage.telemetry import FrameRows, frame_rows

log = logging.getLogger(__name__)


WAKE_BATCH_S = 0.05


def split_frame(machine_id: str, frame: Frame, received: float) -> tuple[Sample, FrameRows]:
    """The frame as the latest sample and as rows for gpu_metrics and machine_metrics
    (this runs for every frame). The sample keeps the frame's GPU dicts."""
    gpus = frame["gpus"]
    sample = Sample(
        machine_id=machine_id, ts=frame["ts"], received=received, cpu_util=frame["cpu_util"],
        mem_used=frame["mem_used"], mem_total=frame["mem_total"],
        disk_used=frame["disk_used"], disk_total=frame["disk_total"],
        gpu_util=round(sum(g["util"] for g in gpus) / len(gpus), 2) if gpus else None,
        gpu_mem=sum(g["mem_used"] for g in gpus) if gpus else 0.0, gpus=gpus,
    )
    rows = frame_rows(datetime.fromtimestamp(frame["ts"], UTC), machine_id,
                      (frame["cpu_util"], frame["mem_used"], frame["mem_total"],
                       frame["disk_used"], frame["disk_total"]), gpus)
    return sample, rows


class Ingest:
    def __init__(self, *, state: LatestState, writer: TelemetryWriter, flow: IngestFlow,
                 sink: HeartbeatSink, rules: FrameRules, alerts: AlertService,
                 leading: Callable[[], bool],
                 came_online: Callable[[list[str]], Awaitable[None]]) -> None:
        self._state = state
        self._writer = writer
        self.flow = flow
        self._sink = sink
        self._rules = rules
        self._alerts = alerts
        self._leading = leading
        self._came_online = came_online
        self._waking: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.frames = 0
        self.refused = 0

    def admit(self, machine_id: str) -> None:
        """For a heartbeat that cannot wait (HTTP): ``Overloaded`` while the flow is
        closed. The machine was heard from all the same."""
        if not self.flow.is_open:
            self.refused += 1
            self._sink.touch(machine_id)
            raise Overloaded("telemetry queue full; send this frame again later",
                             self._writer.retry_after_s())

    def accept(self, machine_id: str, frame: Frame, received: float) -> Sample:
        """Store the frame and apply it; ``Overloaded`` (nothing stored, nothing applied)
        when the writer cannot take its rows (queue at its bound, shutting down)."""
        sample, rows = split_frame(machine_id, frame, received)
        if not self._writer.add(rows):
            self.refused += 1
            self._sink.touch(machine_id)
            raise Overloaded("the hub cannot store this frame now; send it again later",
                             self._writer.retry_after_s())
        self._state.apply(sample)
        self._sink.add(sample)
        self.frames += 1
        self.evaluate(sample)
        if self._state.status(machine_id) != "online" and machine_id not in self._waking:
            if not self._waking:
                self._spawn(self._wake())
            self._waking.add(machine_id)
        return sample

    def apply_remote(self, data: dict[str, Any]) -> None:
        """Samples another hub process received (through the bus)."""
        for item in data.get("samples", ()):
            sample = Sample.from_dict(item)
            self._state.apply(sample)
            self.evaluate(sample)

    def evaluate(self, sample: Sample) -> None:
        # One process (the liveness leader) evaluates every frame of the fleet: the bus
        # brings it the frames other processes received.
        if not self._leading():
            return
        changes = self._rules.observe(sample.machine_id, sample.gpus, sample.disk_used,
                                      sample.disk_total)
        if changes:
            self._spawn(self._apply(changes))

    async def _apply(self, changes: list[Change]) -> None:
        for change in changes:
            if change.raise_:
                await self._alerts.raise_(change.machine_id, change.rule, change.message,
                                          change.details)
            else:
                await self._alerts.resolve(change.machine_id, change.rule)

    async def _wake(self) -> None:
        """Bring machines online in batches: those heard from while the previous batch was
        being written form the next one."""
        await asyncio.sleep(WAKE_BATCH_S)
        while self._waking:
            batch = list(self._waking)
            try:
                await self._came_online(batch)
            except Exception:
                # they are heard from again at the next frame and retried then
                log.warning("machines not brought online", exc_info=True,
                            extra={"machines": len(batch)})
            finally:
                self._waking.difference_update(batch)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("ingest follow-up failed", exc_info=task.exception())

    async def flush(self) -> None:
        """Write what is pending to Redis and PostgreSQL now (tests, shutdown)."""
        await self._sink.flush()
        await self._writer.flush()
        await self.drain()

    async def drain(self, timeout_s: float | None = None) -> None:
        """Wait for follow-ups in flight (alert writes, online transitions); those still
        running after ``timeout_s`` are cancelled (the next frame redoes them)."""
        try:
            async with asyncio.timeout(timeout_s):
                while self._tasks:
                    await asyncio.gather(*list(self._tasks), return_exceptions=True)
        except TimeoutError:
            await cancel_within(list(self._tasks))
