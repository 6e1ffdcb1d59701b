"""What dashboards receive, per topic, built from this process's latest state.

- ``global_monitoring`` (admins, operators): one ``monitoring_snapshot`` of every machine
  each snapshot tick, aligned to the wall clock so every process ticks together.
- ``tenant_{id}_monitoring`` (that tenant's users): one ``monitoring_update`` per machine
  with a new sample, at most once per update tick, for the machines the tenant holds now.
- events (``machine_status``, ``alert``, ``job_update``): at once, to global and to the
  owning tenant's topic (for a machine that changed hands, to the previous tenant too, so
  its dashboard learns the machine left).

Every message is encoded once per topic per tick; the fan-out writes the same bytes to each
subscriber. Topics without subscribers cost nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import orjson

from hub.fanout import Fanout
from hub.protocol import text_frame
from hub.state import LatestState, Sample
from services import events

log = logging.getLogger(__name__)

GLOBAL = "global_monitoring"

# (tick kind, seconds the tick took, seconds from the scheduled tick time to its end)
TickObserver = Callable[[str, float, float], None]


def tenant_topic(tenant_id: int) -> str:
    return f"tenant_{tenant_id}_monitoring"


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC)


def _update(sample: Sample) -> dict[str, Any]:
    return {"machine_id": sample.machine_id, "gpu_util": sample.gpu_util,
            "gpu_mem": sample.gpu_mem, "cpu_util": sample.cpu_util, "ts": sample.ts}


class Topics:
    def __init__(self, state: LatestState, fanout: Fanout, *, snapshot_interval_s: float,
                 update_interval_s: float, observe: TickObserver) -> None:
        self._state = state
        self._fanout = fanout
        self._snapshot_interval_s = snapshot_interval_s
        self._update_interval_s = update_interval_s
        self._observe = observe
        self.seq = 0
        self._snapshot: tuple[float, bytes] | None = None  # (built at, frame)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        # Update ticks fall half-way between whole multiples of their interval, so they
        # never land on a snapshot tick: each tick has the loop to itself.
        self._tasks = [
            asyncio.create_task(self._every(self._snapshot_interval_s, 0.0, "snapshot",
                                            self.snapshot_tick), name="dashboard-snapshots"),
            asyncio.create_task(self._every(self._update_interval_s, self._update_interval_s / 2,
                                            "update", self.update_tick),
                                name="dashboard-updates"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with suppress(asyncio.CancelledError):
                await task

    async def _every(self, interval_s: float, phase_s: float, kind: str,
                     tick: Callable[[float], None]) -> None:
        """Run ``tick`` at every wall-clock time k * interval + phase (the same instants in
        every process)."""
        while True:
            now = time.time()
            due = ((now - phase_s) // interval_s + 1) * interval_s + phase_s
            while now < due:  # timers may fire a little early; a tick never runs before its instant
                await asyncio.sleep(due - now)
                now = time.time()
            started = time.time()
            try:
                tick(due)
            except Exception:
                log.exception("dashboard tick failed", extra={"kind": kind})
            ended = time.time()
            self._observe(kind, ended - started, ended - due)

    def snapshot_tick(self, ts: float) -> None:
        self.seq += 1
        if self._fanout.has(GLOBAL):
            frame = self._snapshot_frame(ts)
            self._fanout.offer_frame(GLOBAL, frame)

    def current_snapshot(self) -> bytes:
        """The frame a new admin dashboard gets at once: the last tick's, if it is recent
        (a burst of connections builds it once), else a fresh one."""
        now = time.time()
        if self._snapshot is None or now - self._snapshot[0] >= self._snapshot_interval_s:
            return self._snapshot_frame(round(now, 3))
        return self._snapshot[1]

    def _snapshot_frame(self, ts: float) -> bytes:
        samples, machines = self._state.samples, self._state.machines
        rows = []
        for machine_id, info in machines.items():
            sample = samples.get(machine_id)
            rows.append({
                "machine_id": machine_id, "status": info.status,
                "gpu_util": sample.gpu_util if sample else None,
                "gpu_mem": sample.gpu_mem if sample else None,
                "cpu_util": sample.cpu_util if sample else None,
                "ts": sample.ts if sample else None,
            })
        frame = text_frame(_dumps({"type": "monitoring_snapshot", "topic": GLOBAL,
                                   "data": {"ts": ts, "seq": self.seq, "machines": rows}}))
        self._snapshot = (time.time(), frame)
        return frame

    def update_tick(self, ts: float) -> None:
        state, fanout = self._state, self._fanout
        changed, state.changed = state.changed, set()
        for machine_id in changed:
            tenant_id = state.tenant_of(machine_id)
            if tenant_id is None:
                continue
            topic = tenant_topic(tenant_id)
            sample = state.samples.get(machine_id)
            if sample is not None and fanout.has(topic):
                fanout.offer(topic, _dumps({"type": "monitoring_update", "topic": topic,
                                            "data": _update(sample)}))
        fanout.sweep()

    def tenant_frames(self, tenant_id: int) -> list[bytes]:
        """One update per machine of the tenant: what a new customer dashboard gets."""
        topic = tenant_topic(tenant_id)
        samples = self._state.samples
        return [text_frame(_dumps({"type": "monitoring_update", "topic": topic,
                                   "data": _update(samples[machine_id])}))
                for machine_id in sorted(self._state.by_tenant.get(tenant_id, ()))
                if machine_id in samples]

    def on_machine_status(self, data: dict[str, Any]) -> None:
        """Update the state first (the machine may change hands), then tell dashboards;
        an event older than what the state knows is for no one."""
        applied, previous = self._state.apply_status(data)
        if applied:
            self._push(events.MACHINE_STATUS, data, {data.get("tenant_id"), previous})

    def on_event(self, kind: str, data: dict[str, Any]) -> None:
        tenant_id = data.get("tenant_id")
        if tenant_id is None and data.get("machine_id"):
            tenant_id = self._state.tenant_of(data["machine_id"])
        self._push(kind, data, {tenant_id})

    def _push(self, kind: str, data: dict[str, Any], tenants: set[int | None]) -> None:
        topics = [GLOBAL] + [tenant_topic(t) for t in tenants if t is not None]
        for topic in topics:
            if self._fanout.has(topic):
                self._fanout.push(topic, _dumps({"type": kind, "topic": topic, "data": data}))
