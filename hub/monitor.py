"""Liveness: machines whose agent fell silent go offline; machines heard from are online.

Silence is measured with the hub's receive times (the last-seen sorted set in Redis, a
process's own clock), never the agent's, and found without scanning keys. Each scan
copies the receive times into ``machines.last_heartbeat_at`` and then sets the stored
status from it, both ways, in one transaction with the ``machine_offline`` alerts: a
machine heard from within the timeout is online, one that was not is offline. So the
stored status converges to the live one within one scan, whatever order frames, scans
and events meet in (the first frame of a machine brings it online at once, between
scans, the same way).

Redis may lose its data (a restart without persistence, a flush, a failover). Its data
epoch (``Keys.data_epoch``) says since when it holds receive times: until a full timeout
has passed since then, silence is not judged (a machine would look silent only because
its heartbeats went with the data).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import asyncpg
import redis.asyncio as redis

from services.alerts import MACHINE_OFFLINE, SEVERITY, AlertService
from services.events import EventSink
from services.job_events import announce_machines
from storage import alerts as alert_store
from storage import machines as machine_store
from storage.cache import Keys

log = logging.getLogger(__name__)

LOOKBACK_S = 10.0


class Liveness:
    def __init__(self, pool: asyncpg.Pool, client: redis.Redis, keys: Keys,
                 alerts: AlertService, events: EventSink, *, timeout_s: float) -> None:
        self._pool = pool
        self._redis = client
        self._keys = keys
        self._alerts = alerts
        self._events = events
        self._timeout_s = timeout_s
        self._last_scan = 0.0
        self.unjudged_scans = 0

    async def scan(self) -> int:
        """One monitor tick: record when machines were last heard from, and set their
        stored status from it. Returns how many went offline."""
        now = time.time()
        # Look back a little: a receive time reaches Redis up to a flush later than it
        # happened (and later still from another process); updates only move forward.
        since = (self._last_scan or now - self._timeout_s) - LOOKBACK_S
        self._last_scan = now
        heard, epoch = await self._heard_since(since, now)
        if heard:
            await machine_store.touch_heartbeats(
                self._pool, [m.decode() for m, _ in heard],
                [datetime.fromtimestamp(score, UTC) for _, score in heard])
        judging = now - epoch >= self._timeout_s
        if not judging:
            self.unjudged_scans += 1
        cutoff = datetime.fromtimestamp(now - self._timeout_s, UTC)
        message = f"no heartbeat for more than {self._timeout_s:g} s"
        async with self._pool.acquire() as conn, conn.transaction():
            offline = await machine_store.mark_silent_offline(conn, cutoff) if judging else []
            raised = await alert_store.raise_alerts(
                conn, [row["id"] for row in offline], MACHINE_OFFLINE, SEVERITY[MACHINE_OFFLINE],
                message,
                {"timeout_s": self._timeout_s}) if offline else []
            back = await machine_store.mark_heard_online(conn, cutoff)
            resolved = await alert_store.resolve(
                conn, [row["id"] for row in back], MACHINE_OFFLINE) if back else []
        self._alerts.announce_raised(raised, MACHINE_OFFLINE, message)
        self._alerts.announce_resolved(resolved)
        announce_machines(self._events, offline + back)
        if offline:
            log.warning("machines offline", extra={"machines": [r["id"] for r in offline]})
        return len(offline)

    async def _heard_since(self, since: float, now: float) -> tuple[list, float]:
        """Receive times after ``since``, and the epoch of the Redis data they come from,
        read in one transaction (so both are of the same data). A missing epoch means
        the data is new: it starts now."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrangebyscore(self._keys.last_seen(), f"({since}", "+inf", withscores=True)
            pipe.set(self._keys.data_epoch(), repr(now), nx=True)
            pipe.get(self._keys.data_epoch())
            heard, created, epoch = await pipe.execute()
        if created:
            log.warning("Redis holds no receive times from before now (new, restarted or "
                        "flushed): silence is not judged for one heartbeat timeout",
                        extra={"timeout_s": self._timeout_s})
        return heard, float(epoch)

    async def came_online(self, machine_ids: list[str]) -> None:
        """Heartbeats from machines this process believed offline (batched: a restart or a
        network blip brings thousands back at once)."""
        heard_at = datetime.now(UTC)
        async with self._pool.acquire() as conn, conn.transaction():
            back = await machine_store.mark_online(conn, machine_ids, heard_at)
            resolved = await alert_store.resolve(
                conn, [row["id"] for row in back], MACHINE_OFFLINE) if back else []
        self._alerts.announce_resolved(resolved)
        announce_machines(self._events, back)
        # The others were online already (another process won) or are unknown here: learn
        # their real state.
        returned = {row["id"] for row in back}
        others = [m for m in machine_ids if m not in returned]
        if others:
            announce_machines(self._events, await machine_store.states(self._pool, others))
