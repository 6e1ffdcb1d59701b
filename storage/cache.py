"""Redis: the client and every key name the hub uses, in one place.

All keys and channels start with the deployment's prefix, so several deployments (or a
test run) can share one Redis server without seeing each other's data.
"""

from __future__ import annotations

from typing import Any

import orjson
import redis.asyncio as redis
from redis import exceptions as redis_errors

UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
)


def create_client(url: str, *, max_connections: int) -> redis.Redis:
    # A burst (thousands of dashboards reconnecting) waits for a free connection instead
    # of failing: redis-py's default pool raises once 100 are busy.
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=5,
        decode_responses=False,
        socket_connect_timeout=5,
        socket_timeout=5,
        health_check_interval=30,
    )
    return redis.Redis.from_pool(pool)  # owns the pool: aclose() closes it


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def revoked_session(self, sid: str) -> str:
        return f"{self.prefix}auth:revoked:sid:{sid}"

    def disabled_user(self, user_id: int) -> str:
        return f"{self.prefix}auth:disabled:user:{user_id}"

    def disabled_tenant(self, tenant_id: int) -> str:
        return f"{self.prefix}auth:disabled:tenant:{tenant_id}"

    def dashboard_seats(self, user_id: int | str) -> str:
        """A user's seat hash (``"*"``: the pattern of them all)."""
        return f"{self.prefix}ws:seats:user:{user_id}"

    def dashboard_process(self, process_id: str = "") -> str:
        """A process's liveness key (without an id: the prefix of them all)."""
        return f"{self.prefix}ws:process:{process_id}"

    def disabled_pattern(self) -> str:
        return f"{self.prefix}auth:disabled:*"

    def revocations_ready(self) -> str:
        """Present once the markers above were rebuilt from PostgreSQL within the current
        data epoch: gone with the data, so its absence means Redis is not to be trusted."""
        return f"{self.prefix}auth:revocations-ready"

    def login_failures_user(self, username: str) -> str:
        return f"{self.prefix}auth:login-failures:user:{username.lower()}"

    def login_failures_ip(self, ip: str) -> str:
        return f"{self.prefix}auth:login-failures:ip:{ip}"

    def login_lock(self, username: str) -> str:
        return f"{self.prefix}auth:login-lock:user:{username.lower()}"

    def login_lockouts(self, username: str) -> str:
        """How many times in a row the username was locked (each lock-out doubles)."""
        return f"{self.prefix}auth:login-lockouts:user:{username.lower()}"

    def periodic_lock(self, job: str) -> str:
        return f"{self.prefix}lock:periodic:{job}"

    def channel(self, name: str) -> str:
        return f"{self.prefix}channel:{name}"

    def heartbeat(self, machine_id: str) -> str:
        """``machine:heartbeat:{id}``, as the seed names it: the hub's receive time."""
        return f"{self.prefix}machine:heartbeat:{machine_id}"

    def last_seen(self) -> str:
        """Sorted set machine id -> receive time: the liveness monitor reads it, no scans."""
        return f"{self.prefix}machines:last-seen"

    def latest(self) -> str:
        """Hash machine id -> latest sample (JSON): the realtime endpoint reads it whole."""
        return f"{self.prefix}machines:latest"

    def owner(self) -> str:
        """Which database this prefix's data belongs to (REDIS prefix ownership)."""
        return f"{self.prefix}owner"

    def data_epoch(self) -> str:
        """Since when (hub time) this Redis holds the deployment's live data: written once
        when found missing, so it is gone whenever the data went (restart, flush). Liveness
        and the rebuild of the revocation markers read it."""
        return f"{self.prefix}data-epoch"

    def dirty_minutes(self) -> str:
        return f"{self.prefix}telemetry:dirty-minutes"

    def dirty_sequence(self) -> str:
        return f"{self.prefix}telemetry:dirty-seq"


async def forget_machine(client: redis.Redis, keys: Keys, machine_id: str) -> None:
    """Drop a deleted machine's heartbeat, last-seen entry and latest sample."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.delete(keys.heartbeat(machine_id))
        pipe.zrem(keys.last_seen(), machine_id)
        pipe.hdel(keys.latest(), machine_id)
        await pipe.execute()


async def latest_samples(client: redis.Redis, keys: Keys) -> list[dict[str, Any]]:
    """Every machine's latest sample, as the hub processes wrote them."""
    return [orjson.loads(raw) for raw in (await client.hgetall(keys.latest())).values()]


class PrefixTaken(Exception):
    """The Redis prefix holds another database's live data: the hub must not start."""


async def claim_prefix(client: redis.Redis, keys: Keys, owner: str) -> None:
    """Record that the prefix's data belongs to ``owner`` (a database's identity), unless
    another one holds it already (two deployments sharing a Redis and a prefix would mix
    their live state and events): then ``PrefixTaken``."""
    await client.set(keys.owner(), owner, nx=True)
    held = await client.get(keys.owner())
    if held is not None and held.decode() != owner:
        raise PrefixTaken(
            f"Redis prefix {keys.prefix!r} holds the live data of database {held.decode()}, "
            f"not of this one ({owner}): another deployment, or a database since "
            "recreated. Give this deployment its own REMOTEGPU_REDIS_PREFIX, or delete the "
            "keys under the prefix if that database is gone.")
