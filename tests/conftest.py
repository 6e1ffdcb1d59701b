"""Test fixtures: a real PostgreSQL database created for this session and dropped after it,
a per-test Redis key prefix, and the app built by the production factory."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis.asyncio as redis
from aiohttp import web
from aiohttp.test_utils import TestClient

from api.app import create_app
from api.keys import METRICS
from api.metrics_listener import metrics_app
from services.settings import Settings
from storage.migrate import choose_timescaledb, migrate
from tests.helpers import Accounts, Api
from tests.proxy import TcpProxy

ADMIN_DSN = os.environ.get("REMOTEGPU_TEST_DATABASE_URL",
                           "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("REMOTEGPU_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

# Everything but the seeded rows (tenant 0, roles) is wiped before each test.
_TRUNCATE = """
TRUNCATE users, refresh_tokens, machines, gpu_devices, allocations, jobs, tasks, datasets,
         dataset_mounts, alerts, audit_logs, gpu_metrics, machine_metrics
         RESTART IDENTITY CASCADE;
DELETE FROM tenants WHERE id <> 0;
"""
# Plain PostgreSQL keeps its own rollup tables; continuous aggregates follow the raw rows.
_TRUNCATE_PLAIN_ROLLUPS = """
TRUNCATE gpu_metrics_1m, gpu_metrics_1h;
UPDATE telemetry_rollup_state SET upto = '-infinity';
"""


def _dsn_for(database: str) -> str:
    parts = urlsplit(ADMIN_DSN)
    return urlunsplit(parts._replace(path=f"/{database}"))


VARIANTS = ("plain", "timescaledb")
# Set by CI where TimescaleDB is installed: its variant must run, not be skipped.
REQUIRE_TIMESCALEDB = os.environ.get("REMOTEGPU_TEST_REQUIRE_TIMESCALEDB") == "1"


async def _create_database(name: str, variant: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    conn = await asyncpg.connect(_dsn_for(name))
    try:
        await migrate(conn, timescaledb=variant == "timescaledb")
    finally:
        await conn.close()


async def _create_shared_database(name: str, variant: str) -> None:
    """A database tests share, emptied before each test. On TimescaleDB its aggregate
    refresh policies are paused: a refresh keeps its buckets and watermark after the raw
    rows are truncated, and would show one test's samples to the next (the policies
    themselves are tested on databases of their own, tests/storage/test_timescaledb.py)."""
    await _create_database(name, variant)
    if variant == "timescaledb":
        conn = await asyncpg.connect(_dsn_for(name))
        try:
            await conn.execute(_PAUSE_REFRESH_POLICIES)
        finally:
            await conn.close()


_PAUSE_REFRESH_POLICIES = """
SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs
WHERE proc_name = 'policy_refresh_continuous_aggregate'
"""


async def _drop_database(name: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def _server_offers_timescaledb() -> bool:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        return await choose_timescaledb(conn, "auto")
    finally:
        await conn.close()


class TestDatabases:
    """One database per telemetry variant for the whole session, created when first
    needed and dropped at the end."""

    def __init__(self) -> None:
        self._tag = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self._urls: dict[str, str] = {}
        self._offers_timescaledb: bool | None = None

    def offers_timescaledb(self) -> bool:
        if self._offers_timescaledb is None:
            self._offers_timescaledb = asyncio.run(_server_offers_timescaledb())
        return self._offers_timescaledb

    def url(self, variant: str) -> str:
        if variant == "auto":
            variant = "timescaledb" if self.offers_timescaledb() else "plain"
        if variant not in self._urls:
            name = f"remotegpu_test_{self._tag}_{variant}"
            asyncio.run(_create_shared_database(name, variant))
            self._urls[variant] = _dsn_for(name)
        return self._urls[variant]

    def drop_all(self) -> None:
        for url in self._urls.values():
            asyncio.run(_drop_database(urlsplit(url).path.lstrip("/")))


@pytest.fixture(scope="session")
def test_databases() -> Iterator[TestDatabases]:
    databases = TestDatabases()
    try:
        databases.offers_timescaledb()
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.exit(f"PostgreSQL for tests unreachable at {ADMIN_DSN}: {exc}", returncode=3)
    yield databases
    databases.drop_all()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``telemetry`` run on each variant of the telemetry tables (or on the
    ones the marker names); every other test runs on the variant the server offers."""
    marker = metafunc.definition.get_closest_marker("telemetry")
    if marker is not None and "telemetry_variant" in metafunc.fixturenames:
        metafunc.parametrize("telemetry_variant", marker.args or VARIANTS, indirect=True)


@pytest.fixture
def telemetry_variant(request: pytest.FixtureRequest, test_databases: TestDatabases) -> str:
    variant = getattr(request, "param", "auto")
    if variant == "timescaledb" and not test_databases.offers_timescaledb():
        message = "this PostgreSQL server does not offer the timescaledb extension"
        if REQUIRE_TIMESCALEDB:
            pytest.fail(message + " (REMOTEGPU_TEST_REQUIRE_TIMESCALEDB=1)")
        pytest.skip(message)
    return variant


@pytest.fixture
def database_url(test_databases: TestDatabases, telemetry_variant: str) -> str:
    return test_databases.url(telemetry_variant)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the test database, emptied before the test."""
    from storage.db import create_pool

    pool = await create_pool(database_url, min_size=1, max_size=4)
    await pool.execute(_TRUNCATE)
    if await pool.fetchval("SELECT to_regclass('telemetry_rollup_state') IS NOT NULL"):
        await pool.execute(_TRUNCATE_PLAIN_ROLLUPS)
    yield pool
    await pool.close()


@pytest.fixture
def redis_prefix() -> str:
    return f"rgpu-test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def redis_client(redis_prefix: str) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:
        pytest.exit(f"Redis for tests unreachable at {REDIS_URL}: {exc}", returncode=3)
    yield client
    keys = [key async for key in client.scan_iter(match=f"{redis_prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
def settings(database_url: str, redis_prefix: str) -> Settings:
    env = {
        "REMOTEGPU_DATABASE_URL": database_url,
        "REMOTEGPU_REDIS_URL": REDIS_URL,
        "REMOTEGPU_REDIS_PREFIX": redis_prefix,
        "REMOTEGPU_JWT_SECRET": "test-secret-" + "x" * 40,
        # Cheap hashes keep the suite fast; production defaults are tested separately.
        "REMOTEGPU_ARGON2_TIME_COST": "1",
        "REMOTEGPU_ARGON2_MEMORY_KIB": "1024",
        "REMOTEGPU_AUDIT_FLUSH_INTERVAL_S": "0.05",
        "REMOTEGPU_DB_POOL_MIN": "1",
        "REMOTEGPU_DB_POOL_MAX": "10",
        # A test that leaves PostgreSQL away waits this long for the writer at teardown.
        "REMOTEGPU_SHUTDOWN_GRACE_S": "3",
        # No listener: apps of one test (and a hub on this machine) would share the port;
        # tests read the metrics with ``scrape``.
        "REMOTEGPU_METRICS_PORT": "0",
    }
    return Settings.from_env(env)


@pytest.fixture
def make_app(settings: Settings, db: asyncpg.Pool, redis_client: redis.Redis
             ) -> Callable[..., web.Application]:
    """Build an app with the production factory; keyword arguments override settings."""
    def build(**overrides: Any) -> web.Application:
        return create_app(dataclasses.replace(settings, **overrides))
    return build


@pytest.fixture
async def client(make_app: Callable[..., web.Application], aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(make_app())


@pytest.fixture
def scrape(aiohttp_client: Any) -> Callable[[TestClient], Awaitable[str]]:
    """The text the metrics listener of ``client``'s hub serves, fetched over HTTP."""
    async def fetch(client: TestClient) -> str:
        listener = await aiohttp_client(metrics_app(client.app[METRICS]))
        resp = await listener.get("/metrics")
        assert resp.status == 200
        return await resp.text()
    return fetch


@pytest.fixture
def accounts(db: asyncpg.Pool, settings: Settings) -> Accounts:
    return Accounts(db, settings)


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def _through(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    hostport = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{hostport}" if len(netloc) == 2
                                     else hostport))


@pytest.fixture
async def pg_proxy(database_url: str) -> AsyncIterator[tuple[TcpProxy, str]]:
    """A cuttable proxy in front of PostgreSQL, and the test database's URL through it."""
    proxy = TcpProxy(*_host_port(database_url, 5432))
    await proxy.start()
    yield proxy, _through(database_url, proxy.port)
    await proxy.close()


@pytest.fixture
async def redis_proxy() -> AsyncIterator[tuple[TcpProxy, str]]:
    """A cuttable proxy in front of Redis, and the Redis URL through it."""
    proxy = TcpProxy(*_host_port(REDIS_URL, 6379))
    await proxy.start()
    yield proxy, _through(REDIS_URL, proxy.port)
    await proxy.close()


@pytest.fixture
async def admin(client: TestClient, accounts: Accounts) -> Api:
    """An admin logged in on ``client``."""
    return await Api.login(client, await accounts.user("root-admin"))
