"""Settings: read once from ``REMOTEGPU_*`` environment variables into a frozen object.

Every setting is declared once in ``SPECS`` with its default, unit and meaning; the README
table is checked against this list by a test, so the two cannot drift apart.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

MIN_JWT_SECRET_BYTES = 32


class SettingsError(ValueError):
    """A setting has a value the hub cannot run with; the message names the variable."""


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected 0/1, true/false, yes/no or on/off")


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("expected a positive integer")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("expected a non-negative integer")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("expected a positive number")
    return value


def _percent(raw: str) -> float:
    value = float(raw)
    if not 0 < value <= 100:
        raise ValueError("expected a percentage in (0, 100]")
    return value


def _timescaledb(raw: str) -> str:
    value = raw.strip().lower()
    if value not in {"auto", "on", "off"}:
        raise ValueError("expected auto, on or off")
    return value


def _log_level(raw: str) -> str:
    value = raw.strip().upper()
    if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError("expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return value


def _networks(raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    return tuple(ipaddress.ip_network(p, strict=False) for p in parts)


def _postgres_url(raw: str) -> str:
    if not raw.startswith(("postgresql://", "postgres://")):
        raise ValueError("expected a postgresql:// URL")
    return raw


def _redis_url(raw: str) -> str:
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("expected a redis://, rediss:// or unix:// URL")
    return raw


def _origins(raw: str) -> tuple[str, ...]:
    parts = tuple(p.strip().rstrip("/").lower() for p in raw.split(",") if p.strip())
    for part in parts:
        if part != "*" and not part.startswith(("http://", "https://")):
            raise ValueError(f"{part!r}: expected * or origins like https://console.example.com")
    return parts


def _text(raw: str) -> str:
    return raw


def _listen_port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("expected a TCP port (1..65535), or 0 for none")
    return value


_HOST_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


def _listen_host(raw: str) -> str:
    value = raw.strip()
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        if _HOST_NAME.match(value):
            return value
    raise ValueError("expected an IP address or a host name")


def _redis_prefix(raw: str) -> str:
    if not raw or any(c.isspace() for c in raw):
        raise ValueError("expected a non-empty prefix without spaces")
    return raw


@dataclass(frozen=True)
class Spec:
    field: str
    env: str
    default: str
    parse: Callable[[str], Any]
    doc: str


SPECS: tuple[Spec, ...] = (
    Spec("database_url", "REMOTEGPU_DATABASE_URL",
         "postgresql://postgres@127.0.0.1:5432/remotegpu", _postgres_url, "asyncpg DSN"),
    Spec("redis_url", "REMOTEGPU_REDIS_URL", "redis://127.0.0.1:6379/0", _redis_url,
         "Redis URL"),
    Spec("redis_max_connections", "REMOTEGPU_REDIS_MAX_CONNECTIONS", "100", _positive_int,
         "Redis connections per process; beyond, commands wait (up to 5 s) for one"),
    Spec("redis_prefix", "REMOTEGPU_REDIS_PREFIX", "rgpu:", _redis_prefix,
         "prefix of every Redis key and pub/sub channel of this deployment (one database's: "
         "a hub refuses to start on a prefix another database owns)"),
    Spec("instance_id", "REMOTEGPU_INSTANCE_ID", "", _text,
         "this hub process's name, stable across restarts (default: host name and port), "
         "so a restarted process takes over what its killed predecessor held"),
    Spec("jwt_secret", "REMOTEGPU_JWT_SECRET", "", _text,
         "HS256 key, at least 32 bytes; required unless REMOTEGPU_DEV=1"),
    Spec("dev", "REMOTEGPU_DEV", "0", _bool,
         "development mode: a random JWT secret per process when none is set"),
    Spec("log_level", "REMOTEGPU_LOG_LEVEL", "INFO", _log_level, "log level"),
    Spec("metrics_host", "REMOTEGPU_METRICS_HOST", "127.0.0.1", _listen_host,
         "address of the Prometheus listener (`/metrics`, never on the API port); "
         "loopback keeps it off the network"),
    Spec("metrics_port", "REMOTEGPU_METRICS_PORT", "9464", _listen_port,
         "port of the Prometheus listener; 0: no listener"),
    Spec("access_token_ttl_s", "REMOTEGPU_ACCESS_TOKEN_TTL_S", "3600", _positive_int,
         "access token lifetime, seconds"),
    Spec("refresh_token_ttl_s", "REMOTEGPU_REFRESH_TOKEN_TTL_S", "2592000", _positive_int,
         "refresh token lifetime, seconds"),
    Spec("trusted_proxies", "REMOTEGPU_TRUSTED_PROXIES", "", _networks,
         "comma-separated CIDRs whose X-Forwarded-For is believed"),
    Spec("login_max_failures", "REMOTEGPU_LOGIN_MAX_FAILURES", "10", _positive_int,
         "failed logins per username per window before it is locked out (per client IP: "
         "5x, then 429 until the window ends)"),
    Spec("login_window_s", "REMOTEGPU_LOGIN_WINDOW_S", "300", _positive_int,
         "login rate-limit window, and the longest lock-out, seconds"),
    Spec("login_lockout_s", "REMOTEGPU_LOGIN_LOCKOUT_S", "30", _positive_int,
         "a username's first lock-out, seconds; each further failure after one doubles it "
         "(up to the window) until a window passes without failures"),
    Spec("max_body_bytes", "REMOTEGPU_MAX_BODY_BYTES", "1048576", _positive_int,
         "largest JSON request body, bytes (larger: 413)"),
    Spec("db_pool_min", "REMOTEGPU_DB_POOL_MIN", "2", _non_negative_int,
         "PostgreSQL pool: connections kept open"),
    Spec("db_pool_max", "REMOTEGPU_DB_POOL_MAX", "20", _positive_int,
         "PostgreSQL pool: most connections"),
    Spec("db_connect_timeout_s", "REMOTEGPU_DB_CONNECT_TIMEOUT_S", "3", _positive_float,
         "longest wait to open a PostgreSQL connection, seconds"),
    Spec("db_command_timeout_s", "REMOTEGPU_DB_COMMAND_TIMEOUT_S", "5", _positive_float,
         "longest wait for a statement of a request, seconds (beyond: 503)"),
    Spec("db_acquire_timeout_s", "REMOTEGPU_DB_ACQUIRE_TIMEOUT_S", "3", _positive_float,
         "longest wait for a free pooled connection, seconds (beyond: 503)"),
    Spec("audit_flush_interval_s", "REMOTEGPU_AUDIT_FLUSH_INTERVAL_S", "0.5", _positive_float,
         "how often audit records PostgreSQL could not take at once are retried, seconds "
         "(a write's record is otherwise committed before its response)"),
    Spec("audit_queue_max", "REMOTEGPU_AUDIT_QUEUE_MAX", "100000", _positive_int,
         "audit records held in memory while PostgreSQL is unreachable; while it is full, "
         "writes are refused with 503 before they run"),
    Spec("shutdown_grace_s", "REMOTEGPU_SHUTDOWN_GRACE_S", "10", _positive_float,
         "time given to open requests and buffers on SIGTERM, seconds"),
    Spec("lease_check_interval_s", "REMOTEGPU_LEASE_CHECK_INTERVAL_S", "60", _positive_float,
         "lease expiry scan interval, seconds"),
    Spec("timescaledb", "REMOTEGPU_TIMESCALEDB", "auto", _timescaledb,
         "auto, on or off: store telemetry with the TimescaleDB extension"),
    Spec("heartbeat_timeout_s", "REMOTEGPU_HEARTBEAT_TIMEOUT_S", "30", _positive_float,
         "silence after which a machine is offline, seconds"),
    Spec("monitor_interval_s", "REMOTEGPU_MONITOR_INTERVAL_S", "30", _positive_float,
         "liveness scan interval, seconds"),
    Spec("job_timeout_s", "REMOTEGPU_JOB_TIMEOUT_S", "600", _positive_float,
         "time an agent has to finish a job it was sent, seconds"),
    Spec("lease_notice_days", "REMOTEGPU_LEASE_NOTICE_DAYS", "7", _positive_int,
         "lease-expiring alert lead time, days"),
    Spec("alert_gpu_temp_c", "REMOTEGPU_ALERT_GPU_TEMP_C", "85", _positive_float,
         "GPU overheat threshold, degrees C"),
    Spec("alert_gpu_temp_samples", "REMOTEGPU_ALERT_GPU_TEMP_SAMPLES", "3", _positive_int,
         "consecutive samples above the overheat threshold before alerting"),
    Spec("alert_disk_pct", "REMOTEGPU_ALERT_DISK_PCT", "90", _percent,
         "disk-full threshold, percent"),
    Spec("alert_quiet_s", "REMOTEGPU_ALERT_QUIET_S", "3600", _positive_float,
         "XID and ECC alerts resolve after this long without new errors, seconds"),
    Spec("ingest_batch_rows", "REMOTEGPU_INGEST_BATCH_ROWS", "5000", _positive_int,
         "telemetry rows per COPY batch"),
    Spec("ingest_flush_s", "REMOTEGPU_INGEST_FLUSH_S", "0.5", _positive_float,
         "longest time a telemetry row waits before its batch is written, seconds"),
    Spec("ingest_queue_rows", "REMOTEGPU_INGEST_QUEUE_ROWS", "1000000", _positive_int,
         "telemetry rows held in memory while PostgreSQL is unreachable; at this bound agents "
         "are no longer read, and frames beyond it are refused (the agent is told)"),
    Spec("ingest_high_water_rows", "REMOTEGPU_INGEST_HIGH_WATER_ROWS", "50000", _positive_int,
         "telemetry rows waiting to be written above which agent sockets are no longer read "
         "and HTTP heartbeats get 503 with Retry-After, until half of it is left"),
    Spec("redis_flush_s", "REMOTEGPU_REDIS_FLUSH_S", "0.25", _positive_float,
         "longest time a frame's heartbeat and latest sample wait before the Redis pipeline "
         "writes them, seconds"),
    Spec("rollup_interval_s", "REMOTEGPU_ROLLUP_INTERVAL_S", "30", _positive_float,
         "plain PostgreSQL: how often the 1 m and 1 h rollups catch up, seconds"),
    Spec("retention_days", "REMOTEGPU_RETENTION_DAYS", "30", _positive_int,
         "raw telemetry kept, days"),
    Spec("snapshot_interval_s", "REMOTEGPU_SNAPSHOT_INTERVAL_S", "5", _positive_float,
         "global monitoring snapshot interval, seconds"),
    Spec("tenant_update_interval_s", "REMOTEGPU_TENANT_UPDATE_INTERVAL_S", "1",
         _positive_float, "tenant topic tick: at most one update per machine per tick, "
         "seconds"),
    Spec("ws_max_connections", "REMOTEGPU_WS_MAX_CONNECTIONS", "20000", _positive_int,
         "dashboard sockets per process (beyond: closed with 4009)"),
    Spec("ws_max_connections_per_user", "REMOTEGPU_WS_MAX_CONNECTIONS_PER_USER", "20",
         _positive_int,
         "dashboard sockets per user, over every process (beyond: closed with 4009)"),
    Spec("ws_high_water_bytes", "REMOTEGPU_WS_HIGH_WATER_BYTES", "262144", _positive_int,
         "socket buffer above which a dashboard skips snapshots and updates, bytes"),
    Spec("ws_slow_close_s", "REMOTEGPU_WS_SLOW_CLOSE_S", "10", _positive_float,
         "time a dashboard may stay above the high-water mark before it is closed with "
         "4008, seconds"),
    Spec("ws_event_queue", "REMOTEGPU_WS_EVENT_QUEUE", "100", _positive_int,
         "events held for a dashboard above the high-water mark (beyond: closed with 4008)"),
    Spec("ws_allowed_origins", "REMOTEGPU_WS_ALLOWED_ORIGINS", "", _origins,
         "comma-separated browser origins allowed on /ws/connect besides the hub's own; * "
         "allows any (clients without an Origin header are always allowed)"),
    Spec("ws_auth_timeout_s", "REMOTEGPU_WS_AUTH_TIMEOUT_S", "5", _positive_float,
         "time a dashboard has to send its auth message when the URL has no token, seconds"),
    Spec("ws_ping_interval_s", "REMOTEGPU_WS_PING_INTERVAL_S", "30", _positive_float,
         "WebSocket ping interval; a peer that misses the pong is dropped, seconds"),
    Spec("ws_max_message_bytes", "REMOTEGPU_WS_MAX_MESSAGE_BYTES", "16384", _positive_int,
         "largest message a dashboard may send (larger: closed with 1009), bytes"),
    Spec("tenant_quota_bytes", "REMOTEGPU_TENANT_QUOTA_BYTES", "10995116277760",
         _non_negative_int, "storage quota of a customer not given one of its own, bytes "
         "(default 10 TiB)"),
    Spec("argon2_time_cost", "REMOTEGPU_ARGON2_TIME_COST", "3", _positive_int,
         "argon2id passes"),
    Spec("argon2_memory_kib", "REMOTEGPU_ARGON2_MEMORY_KIB", "65536", _positive_int,
         "argon2id memory, KiB"),
)


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str
    redis_max_connections: int
    redis_prefix: str
    instance_id: str
    jwt_secret: str
    dev: bool
    log_level: str
    metrics_host: str
    metrics_port: int
    access_token_ttl_s: int
    refresh_token_ttl_s: int
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    login_max_failures: int
    login_window_s: int
    login_lockout_s: int
    max_body_bytes: int
    db_pool_min: int
    db_pool_max: int
    db_connect_timeout_s: float
    db_command_timeout_s: float
    db_acquire_timeout_s: float
    audit_flush_interval_s: float
    audit_queue_max: int
    shutdown_grace_s: float
    lease_check_interval_s: float
    timescaledb: str
    heartbeat_timeout_s: float
    monitor_interval_s: float
    job_timeout_s: float
    lease_notice_days: int
    alert_gpu_temp_c: float
    alert_gpu_temp_samples: int
    alert_disk_pct: float
    alert_quiet_s: float
    ingest_batch_rows: int
    ingest_flush_s: float
    ingest_queue_rows: int
    ingest_high_water_rows: int
    redis_flush_s: float
    rollup_interval_s: float
    retention_days: int
    snapshot_interval_s: float
    tenant_update_interval_s: float
    ws_max_connections: int
    ws_max_connections_per_user: int
    ws_high_water_bytes: int
    ws_slow_close_s: float
    ws_event_queue: int
    ws_allowed_origins: tuple[str, ...]
    ws_auth_timeout_s: float
    ws_ping_interval_s: float
    ws_max_message_bytes: int
    tenant_quota_bytes: int
    argon2_time_cost: int
    argon2_memory_kib: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        values: dict[str, Any] = {}
        for spec in SPECS:
            raw = environ.get(spec.env, spec.default)
            try:
                values[spec.field] = spec.parse(raw)
            except ValueError as exc:
                shown = "<hidden>" if spec.field == "jwt_secret" else repr(raw)
                raise SettingsError(f"{spec.env}={shown}: {exc}") from None
        values["jwt_secret"] = _checked_secret(values["jwt_secret"], values["dev"])
        if values["ingest_high_water_rows"] >= values["ingest_queue_rows"]:
            raise SettingsError("REMOTEGPU_INGEST_HIGH_WATER_ROWS: must be below "
                                "REMOTEGPU_INGEST_QUEUE_ROWS")
        if values["db_pool_min"] > values["db_pool_max"]:
            raise SettingsError("REMOTEGPU_DB_POOL_MIN: must not exceed REMOTEGPU_DB_POOL_MAX")
        return cls(**values)


def _checked_secret(secret: str, dev: bool) -> str:
    if len(secret.encode()) >= MIN_JWT_SECRET_BYTES:
        return secret
    if dev:
        return secrets.token_urlsafe(48)
    if not secret:
        raise SettingsError(
            "REMOTEGPU_JWT_SECRET: required (at least 32 bytes); set REMOTEGPU_DEV=1 to use "
            "a generated one for development"
        )
    raise SettingsError(f"REMOTEGPU_JWT_SECRET: too short, at least {MIN_JWT_SECRET_BYTES} bytes")
