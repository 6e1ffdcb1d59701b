"""GPU trends over time ranges, and the latest sample of every machine from Redis."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import redis.asyncio as redis

from services.errors import NotFound
from storage import machines as machine_store
from storage import telemetry
from storage.cache import Keys

# range -> (span, bucket width), seconds (CONTRACT.md §3: 1h->1m, 6h->5m, 24h->15m,
# 7d->1h, 30d->6h)
RANGES = {
    "1h": (3600, 60),
    "6h": (6 * 3600, 300),
    "24h": (24 * 3600, 900),
    "7d": (7 * 24 * 3600, 3600),
    "30d": (30 * 24 * 3600, 6 * 3600),
}
_FOREVER = datetime.max.replace(tzinfo=UTC)
_NEVER = datetime.min.replace(tzinfo=UTC)


class TelemetryService:
    def __init__(self, pool: asyncpg.Pool, client: redis.Redis, keys: Keys, *,
                 timescaledb: bool, heartbeat_timeout_s: float,
                 known: Callable[[str], bool]) -> None:
        """``known``: whether a machine exists (Redis may still hold samples of one that
        was deleted)."""
        self._pool = pool
        self._redis = client
        self._keys = keys
        self._timescaledb = timescaledb
        self._timeout_s = heartbeat_timeout_s
        self._known = known

    async def trend(self, range_name: str, *, machine_id: str | None = None,
                    not_before: datetime | None = None) -> tuple[int, list[dict[str, Any]]]:
        """``(interval, points)``: buckets aligned to the epoch, oldest first, up to and
        including the current one; empty buckets left out. NotFound for a machine that
        does not exist (no points would not tell a typo from an idle machine)."""
        if machine_id is not None and not await machine_store.existing_ids(self._pool,
                                                                           [machine_id]):
            raise NotFound("machine not found")
        span, width = RANGES[range_name]
        first = math.floor((time.time() - span) / width) * width
        since = datetime.fromtimestamp(first, UTC)
        if not_before is not None and not_before > since:
            if not_before > datetime.now(UTC):
                return width, []  # a lease not begun yet (maybe years ahead) has no data
            since = not_before
        rolled_1h, rolled_1m = await self.watermarks()
        if width < 3600:
            rolled_1h = _NEVER  # minute buckets: nothing from the hourly rollup
        rows = await telemetry.trend(self._pool, since=since, width_s=width,
                                     machine_id=machine_id, rolled_1h=rolled_1h,
                                     rolled_1m=rolled_1m)
        return width, [
            {"ts": row["ts"], "avg_util": round(row["avg_util"], 2),
             "max_util": round(row["max_util"], 2),
             "avg_mem_util": round(row["avg_mem_util"], 2)
             if row["avg_mem_util"] is not None else None}
            for row in rows
        ]

    async def watermarks(self) -> tuple[datetime, datetime]:
        """Up to when the 1 h and the 1 m rollups are complete (reads at or after each
        take the finer level)."""
        if self._timescaledb:
            return _FOREVER, _FOREVER  # real-time continuous aggregates cover everything
        state = await telemetry.rollup_state(self._pool)
        return state["1h"], state["1m"]  # -infinity (nothing rolled up) reads as year 1

    async def realtime(self) -> list[dict[str, Any]]:
        """The latest sample of every machine that ever reported, in one Redis round trip;
        ``status`` from the hub's receive times."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self._keys.latest())
            pipe.zrange(self._keys.last_seen(), 0, -1, withscores=True)
            latest, seen = await pipe.execute()
        heard = {member.decode(): score for member, score in seen}
        cutoff = time.time() - self._timeout_s
        machines = []
        for machine_id, payload in sorted(latest.items()):
            name = machine_id.decode()
            if not self._known(name):
                continue
            sample = orjson.loads(payload)
            machines.append({
                "machine_id": name,
                "status": "online" if heard.get(name, 0) > cutoff else "offline",
                "gpu_util": sample["gpu_util"], "gpu_mem": sample["gpu_mem"],
                "cpu_util": sample["cpu_util"], "ts": sample["ts"],
                "gpus": [{k: g[k] for k in ("index", "util", "mem_used", "mem_total", "temp",
                                             "power")} for g in sample["gpus"]],
            })
        return machines


class TimescaleJobs:
    """TimescaleDB's background jobs (compression, retention, aggregate refresh), read
    every so often: a policy whose last run failed shows in /metrics and /readyz, since
    nothing else would tell (the job only records it in job_stats)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.jobs: list[dict[str, Any]] = []

    async def refresh(self) -> None:
        self.jobs = [dict(row) for row in await telemetry.timescaledb_jobs(self._pool)]

    @property
    def failing(self) -> list[dict[str, Any]]:
        """Jobs whose last run failed: id, name, when it ran, failures in all."""
        return [{"job_id": job["job_id"], "name": job["name"],
                 "last_run_started_at": job["last_run_started_at"],
                 "total_failures": job["total_failures"]}
                for job in self.jobs if job["last_run_status"] == "Failed"]

    def failed_by_job(self) -> dict[str, float]:
        return {job["name"]: float(job["last_run_status"] == "Failed") for job in self.jobs}
