"""The ``remotegpu`` command, run as a real process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys

import aiohttp
import orjson
import pytest

from hub.cli import LISTEN_BACKLOG
from services.passwords import PasswordHasher


@pytest.fixture
def env(settings):
    return {
        **os.environ,
        "REMOTEGPU_DATABASE_URL": settings.database_url,
        "REMOTEGPU_REDIS_URL": settings.redis_url,
        "REMOTEGPU_REDIS_PREFIX": settings.redis_prefix,
        "REMOTEGPU_JWT_SECRET": settings.jwt_secret,
        "REMOTEGPU_ARGON2_TIME_COST": "1",
        "REMOTEGPU_ARGON2_MEMORY_KIB": "1024",
        "REMOTEGPU_METRICS_PORT": "0",  # a hub running on this machine may hold the default
    }


def remotegpu(env, *args, stdin=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "hub.cli", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=timeout)


async def test_migrate_on_a_migrated_database_applies_nothing(env, db):
    result = remotegpu(env, "migrate")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "applied 0 migration(s)"


async def test_create_admin_creates_a_platform_admin(env, db):
    result = remotegpu(env, "create-admin", "--username", "boss", "--password", "first-pass-1")
    assert result.returncode == 0, result.stderr
    row = await db.fetchrow("SELECT * FROM users WHERE username = 'boss'")
    assert (row["role"], row["tenant_id"], row["status"]) == ("admin", 0, "active")
    assert row["password_hash"].startswith("$argon2id$")
    assert await PasswordHasher(time_cost=1, memory_kib=1024).verify(row["password_hash"],
                                                                     "first-pass-1")


async def test_create_admin_twice_refuses_and_points_at_reset(env, db):
    remotegpu(env, "create-admin", "--username", "boss", "--password", "first-pass-1")
    result = remotegpu(env, "create-admin", "--username", "boss", "--password", "other-pass-2")
    assert result.returncode == 1
    assert "--reset" in result.stderr and len(result.stderr.strip().splitlines()) == 1


async def test_create_admin_reset_sets_a_new_password(env, db):
    remotegpu(env, "create-admin", "--username", "boss", "--password", "first-pass-1")
    result = remotegpu(env, "create-admin", "--username", "boss", "--password", "second-pass-2",
                       "--reset")
    assert result.returncode == 0, result.stderr
    stored = await db.fetchval("SELECT password_hash FROM users WHERE username = 'boss'")
    assert await PasswordHasher(time_cost=1, memory_kib=1024).verify(stored, "second-pass-2")


async def test_create_admin_reset_of_an_unknown_user_fails(env, db):
    result = remotegpu(env, "create-admin", "--username", "ghost", "--password", "pass-pass-1",
                       "--reset")
    assert result.returncode == 1 and "ghost" in result.stderr


async def test_create_admin_reads_the_password_from_stdin(env, db):
    result = remotegpu(env, "create-admin", "--username", "boss", stdin="piped-pass-1\n")
    assert result.returncode == 0, result.stderr
    stored = await db.fetchval("SELECT password_hash FROM users WHERE username = 'boss'")
    assert await PasswordHasher(time_cost=1, memory_kib=1024).verify(stored, "piped-pass-1")


@pytest.mark.parametrize(("username", "password", "field"), [
    ("x", "long-enough-1", "username"),
    ("bad name", "long-enough-1", "username"),
    ("boss", "short", "password"),
])
async def test_create_admin_validates_username_and_password(env, db, username, password, field):
    result = remotegpu(env, "create-admin", "--username", username, "--password", password)
    assert result.returncode == 1 and result.stderr.startswith(f"remotegpu: {field}:")
    assert await db.fetchval("SELECT count(*) FROM users") == 0


def test_bad_setting_exits_2_with_one_line_naming_the_variable(env):
    result = remotegpu({**env, "REMOTEGPU_ACCESS_TOKEN_TTL_S": "forever"}, "migrate")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "remotegpu: REMOTEGPU_ACCESS_TOKEN_TTL_S='forever': invalid literal for int() with "
        "base 10: 'forever'"
    ]


def test_missing_secret_outside_dev_mode_exits_2(env):
    result = remotegpu({**env, "REMOTEGPU_JWT_SECRET": ""}, "migrate")
    assert result.returncode == 2 and "REMOTEGPU_JWT_SECRET" in result.stderr


async def test_a_timescaledb_setting_contradicting_the_database_is_refused_in_one_line(env,
                                                                                     db):
    created_with = await db.fetchval("SELECT variant FROM schema_migrations WHERE version = 2")
    setting, how = ("off", "with") if created_with == "timescaledb" else ("on", "without")
    result = remotegpu({**env, "REMOTEGPU_TIMESCALEDB": setting}, "migrate")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"remotegpu: REMOTEGPU_TIMESCALEDB={setting}, but this database's telemetry tables "
        f"were created {how} TimescaleDB"]


def test_unreachable_database_is_one_line(env):
    result = remotegpu({**env, "REMOTEGPU_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"},
                       "migrate")
    assert result.returncode == 1
    assert result.stderr.startswith("remotegpu: cannot reach PostgreSQL")
    assert len(result.stderr.strip().splitlines()) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listen_backlog(port: int) -> int:
    """The listening socket's accept queue limit (Send-Q of a listener in ss)."""
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True,
                         check=True).stdout.split()
    return int(out[2])


def _somaxconn() -> int:
    with open("/proc/sys/net/core/somaxconn") as f:
        return int(f.read())


async def _wait_until_serving(session: aiohttp.ClientSession, base: str) -> None:
    for _ in range(100):
        try:
            async with session.get(base + "/healthz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            await asyncio.sleep(0.1)
    raise AssertionError("the hub did not start")


async def test_serve_answers_then_stops_cleanly_on_sigterm_writing_the_audit_trail(env, db):
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub.cli", "serve", "--port", str(port),
        env={**env, "REMOTEGPU_AUDIT_FLUSH_INTERVAL_S": "60"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            await _wait_until_serving(session, base)
            async with session.post(base + "/api/v1/auth/login",
                                    json={"username": "x", "password": "y"}) as resp:
                assert resp.status == 401
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, stderr
    lines = [orjson.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    assert any(line["msg"] == "request" and line["path"] == "/healthz" for line in lines)
    assert [line["event_loop"] for line in lines if line["msg"] == "serving"] == ["uvloop"]
    written = "SELECT count(*) FROM audit_logs WHERE path = '/api/v1/auth/login'"
    assert await db.fetchval(written) == 1


async def test_serve_serves_metrics_on_the_metrics_port_only(env, db):
    port, metrics_port = _free_port(), _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub.cli", "serve", "--port", str(port),
        env={**env, "REMOTEGPU_METRICS_PORT": str(metrics_port)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession() as session:
            await _wait_until_serving(session, f"http://127.0.0.1:{port}")
            async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                assert resp.status == 404
            async with session.get(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
                assert resp.status == 200
                assert "remotegpu_ingest_rows_written_total" in await resp.text()
    finally:
        proc.terminate()
        await proc.wait()


def test_serve_on_a_metrics_port_in_use_exits_1_with_one_line(env):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = remotegpu({**env, "REMOTEGPU_METRICS_PORT": str(taken.getsockname()[1])},
                           "serve", "--port", str(_free_port()))
    assert result.returncode == 1
    [line] = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert line.startswith("remotegpu: cannot serve metrics on 127.0.0.1:")


async def test_serve_listens_with_a_backlog_for_a_fleet_reconnecting_at_once(env, db):
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub.cli", "serve", "--port", str(port), env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession() as session:
            await _wait_until_serving(session, f"http://127.0.0.1:{port}")
        assert _listen_backlog(port) == min(LISTEN_BACKLOG, _somaxconn())
    finally:
        proc.terminate()
        await proc.wait()
