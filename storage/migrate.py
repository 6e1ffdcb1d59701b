"""Apply the numbered SQL files of ``sql/`` once each, under an advisory lock.

A file ``NNNN_name.sql`` is a migration. ``NNNN_name.timescaledb.sql`` is its variant for
servers with the TimescaleDB extension; ``NNNN_name.plain.sql`` its variant for servers
without. Each migration runs in its own transaction and is recorded in
``schema_migrations`` with a checksum, so an applied file that was edited afterwards is
refused instead of silently diverging.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

# Any constant shared by every hub process; pg_advisory_lock serialises them.
MIGRATION_LOCK_KEY = 0x52475055_0001

_FILE_RE = re.compile(
    r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)(?:\.(?P<variant>timescaledb|plain))?\.sql$"
)

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    variant    text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
_APPLIED = "SELECT version, name, variant, checksum FROM schema_migrations"
_RECORD = "INSERT INTO schema_migrations (version, name, variant, checksum) VALUES ($1, $2, $3, $4)"


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    variant: str  # "common", "timescaledb" or "plain"
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(*, timescaledb: bool) -> list[Migration]:
    """The migrations for this server, one per version, in order."""
    by_version: dict[int, dict[str, Migration]] = {}
    for entry in resources.files("sql").iterdir():
        match = _FILE_RE.match(entry.name)
        if not match:
            continue
        variant = match["variant"] or "common"
        migration = Migration(int(match["version"]), match["name"], variant, entry.read_text())
        by_version.setdefault(migration.version, {})[variant] = migration
    chosen = []
    for version in sorted(by_version):
        variants = by_version[version]
        wanted = "timescaledb" if timescaledb else "plain"
        if wanted in variants:
            chosen.append(variants[wanted])
        elif "common" in variants:
            chosen.append(variants["common"])
        else:
            raise MigrationError(f"migration {version:04d} has no {wanted} or common variant")
    return chosen


async def migrate(conn: asyncpg.Connection, *, timescaledb: bool = False) -> list[Migration]:
    """Apply what is missing; returns the migrations applied by this call."""
    migrations = load_migrations(timescaledb=timescaledb)
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(_CREATE_TABLE)
        applied = {row["version"]: row for row in await conn.fetch(_APPLIED)}
        done = []
        for migration in migrations:
            row = applied.get(migration.version)
            if row is not None:
                _check_unchanged(migration, row)
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    _RECORD, migration.version, migration.name, migration.variant,
                    migration.checksum,
                )
            done.append(migration)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


_AVAILABLE = """
SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
       AND current_setting('shared_preload_libraries') LIKE '%timescaledb%'
"""
_APPLIED_VARIANT = """
SELECT variant FROM schema_migrations WHERE version = $1
"""
_HAS_MIGRATIONS = "SELECT to_regclass('schema_migrations') IS NOT NULL"
TELEMETRY_VERSION = 2


async def applied_telemetry_variant(conn: asyncpg.Connection) -> str | None:
    """"timescaledb" or "plain" once the telemetry migration ran, else None."""
    if not await conn.fetchval(_HAS_MIGRATIONS):
        return None
    return await conn.fetchval(_APPLIED_VARIANT, TELEMETRY_VERSION)


async def choose_timescaledb(conn: asyncpg.Connection, setting: str) -> bool:
    """Whether telemetry uses TimescaleDB, from REMOTEGPU_TIMESCALEDB (auto, on, off) and
    what the server offers. A database keeps the variant it was first migrated with."""
    applied = await applied_telemetry_variant(conn)
    if applied is not None:
        using = applied == "timescaledb"
        if setting == "on" and not using:
            raise MigrationError("REMOTEGPU_TIMESCALEDB=on, but this database's telemetry "
                                 "tables were created without TimescaleDB")
        if setting == "off" and using:
            raise MigrationError("REMOTEGPU_TIMESCALEDB=off, but this database's telemetry "
                                 "tables were created with TimescaleDB")
        return using
    if setting == "off":
        return False
    available = bool(await conn.fetchval(_AVAILABLE))
    if setting == "on" and not available:
        raise MigrationError("REMOTEGPU_TIMESCALEDB=on, but the server does not offer the "
                             "timescaledb extension (installed and in "
                             "shared_preload_libraries)")
    return available


def _check_unchanged(migration: Migration, row: asyncpg.Record) -> None:
    if row["variant"] == migration.variant and row["checksum"] != migration.checksum:
        raise MigrationError(
            f"migration {migration.version:04d}_{migration.name} was edited after it was "
            "applied; add a new migration instead"
        )
