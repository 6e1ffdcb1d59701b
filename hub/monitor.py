"""Liveness: machines whose agent fell silent go offline; a returning heartbeat brings
them back online. Silence is measured with the hub's receive times (the last-seen sorted
set in Redis), never the agent's clock, and found without scanning keys."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import asyncpg
import redis.asyncio as redis

from services.alerts import MACHINE_OFFLINE, AlertService
from services.events import EventSink
from services.job_events import announce_machines
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

    async def scan(self) -> int:
        """One monitor tick: record when machines were last heard from, mark silent ones
        offline (raising an alert each). Returns how many went offline."""
        now = time.time()
        # Look back a little: a receive time reaches Redis up to a flush later than it
        # happened (and later still from another process); updates only move forward.
        since = (self._last_scan or now - self._timeout_s) - LOOKBACK_S
        self._last_scan = now
        heard = await self._redis.zrangebyscore(self._keys.last_seen(), f"({since}", "+inf",
                                                withscores=True)
        if heard:
            await machine_store.touch_heartbeats(
                self._pool, [m.decode() for m, _ in heard],
                [datetime.fromtimestamp(score, UTC) for _, score in heard])
        silent = [m.decode() for m in await self._redis.zrangebyscore(
            self._keys.last_seen(), "-inf", f"({now - self._timeout_s}")]
        offline = await machine_store.mark_offline(self._pool, silent) if silent else []
        # A machine online in PostgreSQL but unknown to Redis (Redis emptied or restarted)
        # would never be seen as silent above; its last heartbeat in PostgreSQL tells.
        offline += await machine_store.mark_stale_offline(
            self._pool, datetime.fromtimestamp(now - self._timeout_s, UTC))
        if offline:
            await self._alerts.raise_many(
                [row["id"] for row in offline], MACHINE_OFFLINE,
                f"no heartbeat for more than {self._timeout_s:g} s",
                {"timeout_s": self._timeout_s},
            )
        announce_machines(self._events, offline)
        if offline:
            log.warning("machines offline", extra={"machines": [r["id"] for r in offline]})
        return len(offline)

    async def came_online(self, machine_ids: list[str]) -> None:
        """Heartbeats from machines this process believed offline (batched: a restart or a
        network blip brings thousands back at once)."""
        back = await machine_store.mark_online(self._pool, machine_ids)
        if back:
            await self._alerts.resolve_many([row["id"] for row in back], MACHINE_OFFLINE)
            announce_machines(self._events, back)
        # The others were online already (another process won) or are unknown here: learn
        # their real state.
        returned = {row["id"] for row in back}
        others = [m for m in machine_ids if m not in returned]
        if others:
            announce_machines(self._events, await machine_store.states(self._pool, others))
