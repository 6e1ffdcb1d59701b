"""PostgreSQL pool: UTC sessions, orjson-backed json/jsonb codecs and a timestamptz codec
that decodes every stored instant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import asyncpg
import orjson

# Errors that mean "the database is unreachable right now", as opposed to a bug or a
# constraint violation; the API answers them with 503.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.TooManyConnectionsError,
)


def _encode_jsonb(value: object) -> bytes:
    return b"\x01" + orjson.dumps(value)  # jsonb's binary format: a version byte, then text


def _decode_jsonb(data: bytes) -> object:
    return orjson.loads(data[1:])


# timestamptz on the wire: microseconds since 2000-01-01 UTC. PostgreSQL holds 4713 BC to
# 294276 AD and +-infinity; Python's datetime only years 1 to 9999. asyncpg raises on a
# value beyond (one lease ending in year 10000 made every list showing it a 500) and gives
# +-infinity as naive datetimes. Decoded here instead, clamped to Python's range and always
# aware UTC: whatever is stored can be read, and repaired through the API.
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)
_EARLIEST_US = (EARLIEST - _PG_EPOCH) // _MICROSECOND
_LATEST_US = (LATEST - _PG_EPOCH) // _MICROSECOND


def _encode_timestamptz(moment: datetime) -> tuple[int]:
    # exact; unlike asyncpg's, datetime.min and max are instants, not -+infinity
    return ((moment.astimezone(UTC) - _PG_EPOCH) // _MICROSECOND,)


def _decode_timestamptz(value: tuple[int]) -> datetime:
    micros = min(max(value[0], _EARLIEST_US), _LATEST_US)
    return _PG_EPOCH + timedelta(microseconds=micros)


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Binary codecs: they also serve COPY, which has no text path for json.
    await conn.set_type_codec("json", encoder=orjson.dumps, decoder=orjson.loads,
                              schema="pg_catalog", format="binary")
    await conn.set_type_codec("jsonb", encoder=_encode_jsonb, decoder=_decode_jsonb,
                              schema="pg_catalog", format="binary")
    await conn.set_type_codec("timestamptz", encoder=_encode_timestamptz,
                              decoder=_decode_timestamptz, schema="pg_catalog",
                              format="tuple")


# Defaults for pools made outside the hub (the CLI, tests); the hub passes its settings.
CONNECT_TIMEOUT_S = 3.0
COMMAND_TIMEOUT_S = 5.0
ACQUIRE_TIMEOUT_S = 3.0


class BoundedPool(asyncpg.Pool):
    """A pool whose every acquire is bounded, also those that ``fetch`` and friends make
    themselves: a request waiting for a connection while PostgreSQL does not answer gives
    up (``TimeoutError``, a 503) instead of queueing for as long as the outage lasts."""

    def __init__(self, *args: Any, acquire_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acquire_timeout = acquire_timeout

    def acquire(self, *, timeout: float | None = None) -> Any:
        return super().acquire(timeout=self._acquire_timeout if timeout is None else timeout)


async def create_pool(dsn: str, *, min_size: int, max_size: int,
                      relaxed_durability: bool = False,
                      connect_timeout_s: float = CONNECT_TIMEOUT_S,
                      command_timeout_s: float = COMMAND_TIMEOUT_S,
                      acquire_timeout_s: float = ACQUIRE_TIMEOUT_S) -> asyncpg.Pool:
    """Every wait on PostgreSQL is bounded: opening a connection (``connect_timeout_s``),
    a statement (``command_timeout_s``, unless a call passes its own) and waiting for a
    free connection (``acquire_timeout_s``).

    ``relaxed_durability``: commits do not wait for the WAL flush. Only for telemetry:
    a PostgreSQL crash may lose the last moments of samples (never part of a COPY), and
    every batch stops paying an fsync, which on ordinary disks is most of its cost."""
    settings = {
        # Month arithmetic on timestamptz follows the session time zone.
        "timezone": "UTC",
        "application_name": "remotegpu-hub",
    }
    if relaxed_durability:
        settings["synchronous_commit"] = "off"
    pool = BoundedPool(
        dsn,
        acquire_timeout=acquire_timeout_s,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        min_size=min_size,
        max_size=max_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        connect=None,
        setup=None,
        init=_init_connection,
        reset=None,
        loop=None,
        server_settings=settings,
        command_timeout=command_timeout_s,
        timeout=connect_timeout_s,
    )
    return await pool


class Executor(Protocol):
    """A pool or a connection: what the repository functions run their SQL on."""

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str: ...

    async def fetch(
        self, query: str, *args: Any, timeout: float | None = None
    ) -> list[asyncpg.Record]: ...

    async def fetchrow(
        self, query: str, *args: Any, timeout: float | None = None
    ) -> asyncpg.Record | None: ...

    async def fetchval(
        self, query: str, *args: Any, column: int = 0, timeout: float | None = None
    ) -> Any: ...


class Where:
    """A WHERE clause assembled from fixed fragments; every value is a bound parameter.

    Each fragment is a constant with ``{}`` where its parameter goes, e.g. ``"status = {}"``.
    """

    def __init__(self) -> None:
        self._clauses: list[str] = []
        self.args: list[Any] = []

    def add(self, fragment: str, value: Any) -> None:
        self.args.append(value)
        self._clauses.append(fragment.format(f"${len(self.args)}"))

    def param(self, value: Any) -> str:
        """Bind a value used outside the WHERE clause (LIMIT, OFFSET); returns its $n."""
        self.args.append(value)
        return f"${len(self.args)}"

    @property
    def sql(self) -> str:
        return " WHERE " + " AND ".join(self._clauses) if self._clauses else ""


def escape_like(text: str) -> str:
    """``text`` with LIKE's wildcards escaped, to match it literally."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


_IDENTITY = """
SELECT (SELECT system_identifier FROM pg_control_system()) || '/' || datname || '/' || oid
FROM pg_database WHERE datname = current_database()
"""


async def database_identity(db: Executor) -> str:
    """This database, unmistakably: the cluster's system identifier, the database's name
    and its oid (a database dropped and created again under the same name is another)."""
    return await db.fetchval(_IDENTITY)
