"""Migrations: applied once, idempotent, safe when two processes start together."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from storage.migrate import (
    TELEMETRY_VERSION,
    MigrationError,
    choose_timescaledb,
    load_migrations,
    migrate,
)
from tests.conftest import ADMIN_DSN, _dsn_for


@pytest.fixture
async def empty_database():
    name = f"remotegpu_mig_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    yield _dsn_for(name)
    await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.close()


async def test_migrate_applies_every_file_once_and_is_idempotent(empty_database):
    conn = await asyncpg.connect(empty_database)
    try:
        first = await migrate(conn)
        second = await migrate(conn)
        assert [m.version for m in first] == [m.version for m in load_migrations(
            timescaledb=False)]
        assert second == []
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(first)
    finally:
        await conn.close()


async def test_two_processes_migrating_at_once_apply_each_file_once(empty_database):
    conns = [await asyncpg.connect(empty_database) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        applied = [m.version for result in results for m in result]
        assert sorted(applied) == [m.version for m in load_migrations(timescaledb=False)]
        assert await conns[0].fetchval("SELECT count(*) FROM tenants WHERE id = 0") == 1
    finally:
        for conn in conns:
            await conn.close()


async def test_an_edited_applied_migration_is_refused(empty_database):
    conn = await asyncpg.connect(empty_database)
    try:
        await migrate(conn)
        await conn.execute("UPDATE schema_migrations SET checksum = 'x' WHERE version = 1")
        with pytest.raises(MigrationError, match="0001_core was edited"):
            await migrate(conn)
    finally:
        await conn.close()


async def test_schema_enforces_one_open_allocation_per_machine(db):
    tenant = await db.fetchval("INSERT INTO tenants (name) VALUES ('t') RETURNING id")
    await db.execute(
        "INSERT INTO machines (id, name, ip, agent_token_hash) VALUES ('m1', 'm1', '10.0.0.1', $1)",
        b"\x00" * 32)
    insert = ("INSERT INTO allocations (machine_id, machine_name, tenant_id, start_time, "
              "expires_at, duration_months) "
              "VALUES ('m1', 'm1', $1, now(), now() + interval '1 month', 1)")
    await db.execute(insert, tenant)
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute(insert, tenant)



# --- REMOTEGPU_TIMESCALEDB: auto | on | off ---------------------------------------------------

async def _offers_timescaledb(conn: asyncpg.Connection) -> bool:
    return await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') "
        "AND current_setting('shared_preload_libraries') LIKE '%timescaledb%'")


@pytest.fixture
async def fresh_conn(empty_database):
    conn = await asyncpg.connect(empty_database)
    yield conn
    await conn.close()


async def test_auto_uses_timescaledb_exactly_when_the_server_offers_it(fresh_conn):
    assert await choose_timescaledb(fresh_conn, "auto") == await _offers_timescaledb(fresh_conn)


async def test_off_uses_plain_postgresql_whatever_the_server_offers(fresh_conn):
    assert await choose_timescaledb(fresh_conn, "off") is False


async def test_on_refuses_a_server_without_the_extension(fresh_conn):
    if await _offers_timescaledb(fresh_conn):
        assert await choose_timescaledb(fresh_conn, "on") is True
        return
    with pytest.raises(MigrationError, match="does not offer the timescaledb extension"):
        await choose_timescaledb(fresh_conn, "on")


async def test_a_database_keeps_the_telemetry_variant_it_was_created_with(fresh_conn):
    await migrate(fresh_conn, timescaledb=False)
    assert await choose_timescaledb(fresh_conn, "auto") is False
    with pytest.raises(MigrationError, match="created without TimescaleDB"):
        await choose_timescaledb(fresh_conn, "on")


async def test_off_refuses_a_database_created_with_timescaledb(fresh_conn):
    await migrate(fresh_conn, timescaledb=False)
    # as the record of a TimescaleDB migration reads (this server may lack the extension)
    await fresh_conn.execute("UPDATE schema_migrations SET variant = 'timescaledb' "
                             "WHERE version = $1", TELEMETRY_VERSION)
    assert await choose_timescaledb(fresh_conn, "auto") is True
    assert await choose_timescaledb(fresh_conn, "on") is True
    with pytest.raises(MigrationError, match="created with TimescaleDB"):
        await choose_timescaledb(fresh_conn, "off")
