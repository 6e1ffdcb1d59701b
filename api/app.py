"""The app factory: the one place where storage objects are wired into services, the
real-time hub and the HTTP layer. Tests build the app with this same function."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from importlib import metadata

import aiohttp_jinja2
import asyncpg
import jinja2
from aiohttp import web

from api import (
    agent,
    alerts,
    allocations,
    api_keys,
    audit,
    auth,
    customer,
    customers,
    dashboard,
    dashboard_socket,
    docs,
    jobs,
    machines,
    monitoring,
    ops,
    usage,
    users,
)
from api.keys import (
    AGENT_AUTH,
    AGENT_SOCKETS,
    ALERTS,
    ALLOCATIONS,
    API_KEYS,
    AUDIT,
    AUTH,
    BUS,
    CUSTOMERS,
    DASHBOARD,
    DASHBOARD_SOCKETS,
    DISPATCHER,
    FANOUT,
    IMPORTS,
    INGEST,
    JOBS,
    LIVENESS,
    MACHINES,
    METRICS,
    OPENAPI,
    PERIODIC,
    PG_POOL,
    READINESS,
    REDIS,
    REDIS_KEYS,
    SETTINGS,
    SHUTDOWN,
    STATE,
    TELEMETRY,
    TENANT_MACHINES,
    TIMESCALE_JOBS,
    TIMESCALEDB,
    TOPICS,
    USAGE,
    USERS,
)
from api.metrics import HttpMetrics
from api.metrics_listener import metrics_listener
from api.middlewares import audit as audit_middleware
from api.middlewares import authenticate, authorize, error_middleware, trace
from api.openapi import build_document
from api.readiness import ReadinessProbes
from api.routing import Routes, check_all_declared
from api.shutdown import SOCKETS_SHARE, ShutdownClock
from hub.agent_ws import CLOSE_UNAUTHENTICATED, AgentSockets
from hub.bus import TELEMETRY as TELEMETRY_CHANNEL
from hub.bus import Bus
from hub.dashboards import SEAT_LAPSE_S, DashboardSockets
from hub.dispatcher import Dispatcher
from hub.fanout import Fanout
from hub.flow import IngestFlow
from hub.heartbeats import HeartbeatSink
from hub.ingest import Ingest
from hub.monitor import Liveness
from hub.periodic import LeaderLock, Periodic, lock_ttl
from hub.rollups import DirtyMinutes, TelemetryMaintenance
from hub.state import LatestState, Sample
from hub.topics import Topics
from hub.writer import TelemetryWriter
from services import events
from services.agents import AgentAuth
from services.alert_rules import FrameRules
from services.alerts import AlertService
from services.allocations import AllocationService
from services.api_keys import LAST_USED_FLUSH_S, ApiKeyService
from services.audit import AuditTrail
from services.auth import IP_LIMIT_FACTOR, AuthService
from services.customers import CustomerService
from services.dashboard import DashboardService
from services.imports import ImportService
from services.job_events import machine_status
from services.jobs import JobService
from services.machines import MachineService
from services.passwords import PasswordHasher
from services.revocations import RevocationCheck
from services.settings import Settings
from services.telemetry import TelemetryService, TimescaleJobs
from services.tenant_machines import TenantMachineService
from services.tokens import AccessTokens
from services.usage import UsageService
from services.users import UserService
from storage import alerts as alert_store
from storage import cache, db, roles
from storage import machines as machine_store
from storage.dashboard_seats import DashboardSeats
from storage.migrate import applied_telemetry_variant
from storage.ratelimit import Limits, LoginThrottle
from storage.revocations import Revocations

log = logging.getLogger(__name__)

RESOURCES: tuple[Routes, ...] = (
    auth.routes, machines.routes, allocations.routes, customers.routes, dashboard.routes,
    monitoring.routes, alerts.routes, customer.routes, jobs.routes, agent.routes,
    audit.routes, ops.routes, docs.routes, dashboard_socket.routes, users.routes,
    usage.routes, api_keys.routes,
)
_POOL_CLOSE_TIMEOUT_S = 5.0
_PERIODIC_STOP_SHARE = 0.1
_FOLLOW_UPS_SHARE = 0.1
_AFTER_WRITER_S = 1.0  # what the last stages (audit, pools) get after the telemetry writer
DISPATCH_REFRESH_S = 5.0
PARTITION_INTERVAL_S = 3600.0
TIMESCALE_JOBS_CHECK_S = 60.0
PREFIX_CLAIM_S = 30.0
WRITER_CONNECTIONS = 2
# A COPY is sent again after this (each sample is stored once however often it is sent).
WRITE_TIMEOUT_S = 30.0


def version() -> str:
    try:
        return metadata.version("remotegpu-hub")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


def create_app(settings: Settings) -> web.Application:
    unavailable = {kind: "redis" for kind in cache.UNAVAILABLE_ERRORS}
    unavailable.update({kind: "database" for kind in db.UNAVAILABLE_ERRORS})
    app = web.Application(
        middlewares=[trace, audit_middleware, error_middleware(unavailable), authenticate,
                     authorize],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[METRICS] = HttpMetrics()
    app[SHUTDOWN] = ShutdownClock(settings.shutdown_grace_s)
    app.cleanup_ctx.extend([metrics_listener, _postgres, _redis, _bus, _services, _audit_trail,
                            _realtime, _dashboards, _periodic_jobs])
    app.on_shutdown.append(_close_sockets)
    endpoints = []
    for resource in RESOURCES:
        app.add_routes(resource.table)
        endpoints += resource.endpoints
    check_all_declared(app)
    app[OPENAPI] = build_document(endpoints, title="RemoteGPU hub API", version=version())
    aiohttp_jinja2.setup(app, loader=jinja2.PackageLoader("api", "templates"), autoescape=True)
    return app


async def _postgres(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    pool = await db.create_pool(settings.database_url, min_size=settings.db_pool_min,
                                max_size=settings.db_pool_max, **_db_timeouts(settings))
    app[PG_POOL] = pool
    async with pool.acquire() as conn:
        app[TIMESCALEDB] = await applied_telemetry_variant(conn) == "timescaledb"
    yield
    await _close_pool(pool, app[SHUTDOWN])
    log.info("shutdown complete", extra={"took_s": round(app[SHUTDOWN].elapsed(), 3)})


def _db_timeouts(settings: Settings) -> dict[str, float]:
    return {"connect_timeout_s": settings.db_connect_timeout_s,
            "command_timeout_s": settings.db_command_timeout_s,
            "acquire_timeout_s": settings.db_acquire_timeout_s}


async def _close_pool(pool: asyncpg.Pool, clock: ShutdownClock) -> None:
    try:
        async with asyncio.timeout(min(clock.left(), _POOL_CLOSE_TIMEOUT_S)):
            await pool.close()
    except TimeoutError:
        pool.terminate()


async def _redis(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    client = cache.create_client(settings.redis_url,
                                 max_connections=settings.redis_max_connections)
    keys = cache.Keys(settings.redis_prefix)
    app[REDIS], app[REDIS_KEYS] = client, keys
    owner = await db.database_identity(app[PG_POOL])
    try:
        await cache.claim_prefix(client, keys, owner)
    except BaseException:
        await client.aclose()
        raise
    # Redis may lose the claim with its data: every process claims it again now and then.
    app[PERIODIC] = {"redis_prefix": Periodic(
        "redis_prefix", PREFIX_CLAIM_S, partial(cache.claim_prefix, client, keys, owner))}
    yield
    await client.aclose()


async def _bus(app: web.Application) -> AsyncIterator[None]:
    bus = Bus(app[REDIS], app[REDIS_KEYS])
    app[BUS] = bus
    metrics = app[METRICS]
    metrics.counter("remotegpu_bus_dropped", "messages not sent to other processes (Redis "
                    "down, queue full)", lambda: bus.dropped)
    metrics.counter("remotegpu_bus_reconnects", "Redis pub/sub reconnections",
                    lambda: bus.reconnects)
    metrics.counter("remotegpu_bus_received", "messages received from other processes",
                    lambda: bus.received)
    bus.start()
    yield
    await bus.stop()


async def _services(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    pool, keys, bus = app[PG_POOL], app[REDIS_KEYS], app[BUS]
    revocations = Revocations(app[REDIS], keys)
    revocation_check = RevocationCheck(pool, revocations, settings.access_token_ttl_s)
    await revocation_check.rebuild()  # what changed in PostgreSQL while no hub ran
    hasher = PasswordHasher(time_cost=settings.argon2_time_cost,
                            memory_kib=settings.argon2_memory_kib)
    app[STATE] = LatestState()
    login_limits = Limits(per_username=settings.login_max_failures,
                          per_ip=settings.login_max_failures * IP_LIMIT_FACTOR,
                          window_s=settings.login_window_s, lockout_s=settings.login_lockout_s)
    throttle = LoginThrottle(app[REDIS], keys, login_limits)
    app[API_KEYS] = _api_keys(app, revocations)
    app[AUTH] = AuthService(
        pool=pool,
        revocations=revocations,
        revocation_check=revocation_check,
        throttle=throttle,
        hasher=hasher,
        access_tokens=AccessTokens(settings.jwt_secret, settings.access_token_ttl_s),
        permissions_by_role=await roles.permissions_by_role(pool),
        refresh_ttl_s=settings.refresh_token_ttl_s,
        events=bus,
        api_keys=app[API_KEYS],
    )
    app[ALERTS] = AlertService(pool, bus)
    app[MACHINES] = MachineService(pool, bus)
    app[IMPORTS] = ImportService(app[MACHINES], pool)
    app[ALLOCATIONS] = AllocationService(pool, app[ALERTS], bus)
    app[JOBS] = JobService(pool, app[ALLOCATIONS], app[ALERTS], bus, settings.job_timeout_s)
    app[CUSTOMERS] = CustomerService(pool, hasher, revocations, settings.access_token_ttl_s,
                                     bus, default_quota_bytes=settings.tenant_quota_bytes)
    app[USERS] = UserService(pool, hasher, revocations, throttle, settings.access_token_ttl_s,
                             bus)
    app[DASHBOARD] = DashboardService(pool, app[STATE].avg_gpu_util)
    app[TENANT_MACHINES] = TenantMachineService(pool, bus)
    app[AGENT_AUTH] = AgentAuth(pool)
    app[TELEMETRY] = TelemetryService(pool, app[REDIS], keys, timescaledb=app[TIMESCALEDB],
                                      heartbeat_timeout_s=settings.heartbeat_timeout_s,
                                      known=app[STATE].knows)
    app[USAGE] = UsageService(pool, app[TELEMETRY])
    app[READINESS] = ReadinessProbes(pool, app[REDIS])
    yield
    await revocation_check.close()
    hasher.close()
    await _flush_key_use(app)


def _api_keys(app: web.Application, revocations: Revocations) -> ApiKeyService:
    """API keys, with their last uses written every minute by every process (each writes
    its own) and once more at shutdown."""
    keys = ApiKeyService(app[PG_POOL], revocations, app[BUS])
    app[BUS].subscribe(events.ACCESS_REVOKED, keys.on_access_revoked)
    app[PERIODIC]["api_key_last_use"] = Periodic("api_key_last_use", LAST_USED_FLUSH_S,
                                                 keys.flush_last_use)
    app[METRICS].counter("remotegpu_api_key_last_use_writes", "API key rows whose "
                         "last_used_at was written (one per key and minute at most)",
                         lambda: keys.last_use.writes)
    app[METRICS].counter("remotegpu_api_key_reads", "API key rows read from PostgreSQL to "
                         "authenticate (not in the in-memory cache)", lambda: keys.lookups)
    return keys


async def _flush_key_use(app: web.Application) -> None:
    """After the periodic flush stopped: the last minute of uses, within the grace time."""
    try:
        async with asyncio.timeout(app[SHUTDOWN].left(_FOLLOW_UPS_SHARE)):
            await app[API_KEYS].flush_last_use()
    except (TimeoutError, *db.UNAVAILABLE_ERRORS) as exc:
        log.warning("API key last uses not written at shutdown", extra={"error": repr(exc)})


async def _audit_trail(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    trail = AuditTrail(app[PG_POOL], retry_interval_s=settings.audit_flush_interval_s,
                       queue_max=settings.audit_queue_max)
    app[AUDIT] = trail
    metrics = app[METRICS]
    metrics.gauge("remotegpu_audit_pending", "audit records PostgreSQL could not take yet, "
                  "queued for retries", lambda: trail.pending)
    metrics.gauge("remotegpu_audit_queue_max", "audit records the retry queue holds; at it, "
                  "writes are refused with 503", lambda: trail.queue_max)
    metrics.counter("remotegpu_audit_dropped", "audit records PostgreSQL refused (never "
                    "storable)", lambda: trail.dropped)
    trail.start()
    yield
    await trail.close(app[SHUTDOWN].left())


def _monitor_lock(app: web.Application, name: str, interval_s: float) -> LeaderLock:
    return LeaderLock(app[REDIS], app[REDIS_KEYS].periodic_lock(name), lock_ttl(interval_s))


async def _realtime(app: web.Application) -> AsyncIterator[None]:
    """The telemetry path and agent sockets: state, writers, alert rules, dispatch."""
    settings, pool, bus, state = app[SETTINGS], app[PG_POOL], app[BUS], app[STATE]
    state.load(await machine_store.all_states(pool))
    for sample in await cache.latest_samples(app[REDIS], app[REDIS_KEYS]):
        if sample["machine_id"] in state.machines:  # not a machine deleted meanwhile
            state.apply(Sample.from_dict(sample))
    dirty = None if app[TIMESCALEDB] else DirtyMinutes(app[REDIS], app[REDIS_KEYS])
    # Its own connections: a burst of other queries must never stall the ingest.
    writer_pool = await db.create_pool(settings.database_url, min_size=1,
                                       max_size=WRITER_CONNECTIONS, relaxed_durability=True,
                                       **_db_timeouts(settings))
    flow = IngestFlow(high_water=settings.ingest_high_water_rows,
                      low_water=settings.ingest_high_water_rows // 2)
    writer = TelemetryWriter(writer_pool, batch_rows=settings.ingest_batch_rows,
                             flush_s=settings.ingest_flush_s,
                             queue_rows=settings.ingest_queue_rows, flow=flow,
                             on_written=dirty.mark if dirty else None,
                             write_timeout_s=WRITE_TIMEOUT_S)
    sink = HeartbeatSink(app[REDIS], app[REDIS_KEYS], bus, flush_s=settings.redis_flush_s,
                         heartbeat_ttl_s=int(max(settings.heartbeat_timeout_s * 4, 120)),
                         held=lambda: flow.waiting)
    rules = FrameRules(temp_c=settings.alert_gpu_temp_c,
                       temp_samples=settings.alert_gpu_temp_samples,
                       disk_pct=settings.alert_disk_pct)
    rules.load(await alert_store.rule_memory(pool))
    liveness = Liveness(pool, app[REDIS], app[REDIS_KEYS], app[ALERTS], bus,
                        timeout_s=settings.heartbeat_timeout_s)
    monitor = Periodic("liveness", settings.monitor_interval_s, liveness.scan,
                       _monitor_lock(app, "liveness", settings.monitor_interval_s))
    ingest = Ingest(state=state, writer=writer, flow=flow, sink=sink, rules=rules,
                    alerts=app[ALERTS], leading=lambda: monitor.leading,
                    came_online=liveness.came_online)
    dispatcher = Dispatcher(app[JOBS])
    sockets = AgentSockets(ingest=ingest, dispatcher=dispatcher, jobs=app[JOBS],
                           auth=app[AGENT_AUTH], ping_interval_s=settings.ws_ping_interval_s)
    app[INGEST], app[DISPATCHER], app[AGENT_SOCKETS] = ingest, dispatcher, sockets
    app[LIVENESS] = liveness
    app[PERIODIC]["liveness"] = monitor

    bus.subscribe(events.MACHINE_DELETED, lambda data: _forget(app, rules, data["machine_id"]))
    bus.subscribe(events.JOB_QUEUED, dispatcher.on_job_queued)
    bus.subscribe(events.AGENT_TOKEN_ROTATED, lambda data: _token_rotated(app, data))
    bus.subscribe(events.ALERT, rules.note)
    bus.subscribe(TELEMETRY_CHANNEL, ingest.apply_remote)
    _register_ingest_metrics(app, ingest, writer, sink, sockets)

    writer.start()
    sink.start()
    sockets.start()
    yield
    await sockets.close_all(0)  # normally done at shutdown already
    await sockets.stop()
    await dispatcher.stop()
    await ingest.drain(app[SHUTDOWN].left(_FOLLOW_UPS_SHARE))
    await sink.close()
    # the writer may keep trying up to the last second: rows are what matters most
    await writer.close(app[SHUTDOWN].left() - _AFTER_WRITER_S)
    await _close_pool(writer_pool, app[SHUTDOWN])


async def _dashboards(app: web.Application) -> AsyncIterator[None]:
    """Live dashboards: topics built from the latest state, written through the fan-out."""
    settings, bus, metrics = app[SETTINGS], app[BUS], app[METRICS]
    fanout = Fanout(high_water_bytes=settings.ws_high_water_bytes,
                    slow_close_s=settings.ws_slow_close_s, event_queue=settings.ws_event_queue)
    ticks = metrics.histogram("remotegpu_ws_tick_seconds", "time to build and write one "
                              "dashboard tick", ["kind"])
    lag: dict[str, float] = {}

    def observe(kind: str, took_s: float, late_s: float) -> None:
        ticks.labels(kind).observe(took_s)
        lag[kind] = late_s

    seats = DashboardSeats(app[REDIS], app[REDIS_KEYS],
                           process_id=settings.instance_id or uuid.uuid4().hex,
                           lapse_s=SEAT_LAPSE_S)
    await seats.release_all()  # of a predecessor killed before it could
    topics = Topics(app[STATE], fanout, snapshot_interval_s=settings.snapshot_interval_s,
                    update_interval_s=settings.tenant_update_interval_s, observe=observe)
    sockets = DashboardSockets(
        auth=app[AUTH], fanout=fanout, topics=topics,
        seats=seats,
        max_connections=settings.ws_max_connections,
        max_per_user=settings.ws_max_connections_per_user,
        allowed_origins=settings.ws_allowed_origins, auth_timeout_s=settings.ws_auth_timeout_s,
        ping_interval_s=settings.ws_ping_interval_s,
        max_message_bytes=settings.ws_max_message_bytes)
    app[FANOUT], app[TOPICS], app[DASHBOARD_SOCKETS] = fanout, topics, sockets
    # machine_status also moves the machine in the latest state, before dashboards hear it.
    bus.subscribe(events.MACHINE_STATUS, topics.on_machine_status)
    bus.subscribe(events.ALERT, partial(topics.on_event, events.ALERT))
    bus.subscribe(events.JOB_UPDATE, partial(topics.on_event, events.JOB_UPDATE))
    bus.subscribe(events.ACCESS_REVOKED, sockets.on_access_revoked)
    metrics.gauges("remotegpu_ws_connections", "dashboard sockets subscribed, by role",
                   "role", sockets.by_role)
    metrics.gauge("remotegpu_ws_sockets", "dashboard sockets open (authenticated or not)",
                  lambda: sockets.count)
    metrics.counter("remotegpu_ws_frames_sent", "frames written to dashboards",
                    lambda: fanout.sent)
    metrics.counter("remotegpu_ws_frames_skipped", "snapshots and updates a dashboard "
                    "missed because its buffer was above the high-water mark",
                    lambda: fanout.skipped)
    metrics.counter("remotegpu_ws_slow_closes", "dashboards closed with 4008",
                    lambda: fanout.slow_closes)
    metrics.counter("remotegpu_ws_refused", "dashboard sockets refused (origin, limits)",
                    lambda: sockets.refused)
    metrics.counter("remotegpu_ws_bad_messages", "dashboard messages answered with an error",
                    lambda: sockets.bad_messages)
    metrics.gauges("remotegpu_ws_fanout_lag_seconds", "from a tick's scheduled time to the "
                   "last write of it, last tick", "kind", lambda: lag)
    topics.start()
    sockets.start()
    yield
    await sockets.stop()
    await topics.stop()


async def _close_sockets(app: web.Application) -> None:
    """SIGTERM: the site has stopped accepting; every agent and dashboard gets 1001 now."""
    clock = app[SHUTDOWN]
    clock.start()
    log.info("shutting down", extra={"grace_s": clock.grace_s,
                                     "agent_sockets": app[AGENT_SOCKETS].count,
                                     "dashboards": app[DASHBOARD_SOCKETS].count})
    await asyncio.gather(app[AGENT_SOCKETS].close_all(clock.left(SOCKETS_SHARE)),
                         app[DASHBOARD_SOCKETS].close_all(clock.left(SOCKETS_SHARE)))


async def _resync_state(app: web.Application) -> None:
    """Every process: machine states newer in PostgreSQL than in memory (an event lost
    while Redis was away, or sent before this process listened) are applied, and told to
    this process's dashboards."""
    now = time.time()
    for row in await machine_store.all_states(app[PG_POOL]):
        app[TOPICS].on_machine_status(machine_status(row, now))


def _forget(app: web.Application, rules: FrameRules, machine_id: str) -> None:
    app[STATE].remove(machine_id)
    rules.forget(machine_id)
    asyncio.get_running_loop().create_task(
        cache.forget_machine(app[REDIS], app[REDIS_KEYS], machine_id))


def _token_rotated(app: web.Application, data: dict[str, str]) -> None:
    app[AGENT_AUTH].forget(data["machine_id"])
    app[AGENT_SOCKETS].close_machine(data["machine_id"], CLOSE_UNAUTHENTICATED,
                                     "agent token rotated")


def _register_ingest_metrics(app: web.Application, ingest: Ingest, writer: TelemetryWriter,
                             sink: HeartbeatSink, sockets: AgentSockets) -> None:
    metrics = app[METRICS]
    metrics.counter("remotegpu_ingest_frames", "metrics frames accepted", lambda: ingest.frames)
    metrics.counter("remotegpu_ingest_rows_written", "telemetry rows written to PostgreSQL",
                    lambda: writer.rows_written)
    metrics.counter("remotegpu_ingest_rows_dropped", "telemetry rows taken but never "
                    "written (shutdown's deadline passed first)", lambda: writer.rows_dropped)
    metrics.counter("remotegpu_ingest_rows_refused", "telemetry rows refused (queue at its "
                    "bound, or shutting down): the agent was told", lambda: writer.rows_refused)
    metrics.counter("remotegpu_ingest_rows_duplicate", "telemetry rows not stored because "
                    "they were stored already (retried batches, frames sent twice)",
                    lambda: writer.duplicates)
    metrics.gauge("remotegpu_ingest_rows_queued", "telemetry rows waiting to be written",
                  lambda: writer.queued)
    metrics.gauge("remotegpu_ingest_queue_high_water_rows", "queue depth at which agents "
                  "stop being read (raised to the bound while PostgreSQL is unreachable)",
                  lambda: writer.high_water)
    metrics.gauge("remotegpu_ingest_queue_low_water_rows", "queue depth at which agents are "
                  "read again", lambda: writer.low_water)
    metrics.gauge("remotegpu_ingest_flow_open", "1 while agents are read, 0 while the write "
                  "queue holds them back", lambda: float(ingest.flow.is_open))
    metrics.counter("remotegpu_ingest_flow_closings", "times the write queue passed its "
                    "high-water mark", lambda: ingest.flow.closings)
    metrics.counter("remotegpu_ingest_flow_closed_seconds", "time agents were held back",
                    lambda: ingest.flow.closed_seconds)
    metrics.gauge("remotegpu_ingest_agents_held", "agent sockets waiting for the write "
                  "queue", lambda: len(ingest.flow.waiting))
    metrics.counter("remotegpu_ingest_frames_refused", "metrics frames refused for want of "
                    "room (HTTP 503, or an unavailable error on the socket)",
                    lambda: ingest.refused)
    metrics.counter("remotegpu_ingest_batches", "COPY batches written", lambda: writer.batches)
    metrics.counter("remotegpu_ingest_write_failures", "COPY batches that failed (retried)",
                    lambda: writer.failures)
    metrics.gauge("remotegpu_ingest_last_batch_seconds", "duration of the last COPY batch",
                  lambda: writer.last_batch_s)
    metrics.counter("remotegpu_redis_heartbeat_failures", "heartbeat pipelines that failed "
                    "(retried)", lambda: sink.failures)
    metrics.gauge("remotegpu_agent_sockets", "agent WebSockets open on this process",
                  lambda: sockets.count)
    metrics.counter("remotegpu_agent_bad_messages", "agent messages rejected",
                    lambda: sockets.bad_messages)
    metrics.counter("remotegpu_agent_sockets_dead", "agent sockets dropped for not "
                    "answering pings", lambda: sockets.dead)


async def _periodic_jobs(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    allocations, alerts_, jobs_ = app[ALLOCATIONS], app[ALERTS], app[JOBS]

    async def leases() -> None:
        await allocations.reclaim_expired()
        await allocations.notify_expiring(settings.lease_notice_days)
        await alerts_.resolve_quiet(settings.alert_quiet_s)

    def leader(name: str, interval: float, job: Callable[[], Awaitable[object]]) -> Periodic:
        return Periodic(name, interval, job, _monitor_lock(app, name, interval))

    periodic = app[PERIODIC]
    periodic["lease_expiry"] = leader("lease_expiry", settings.lease_check_interval_s, leases)
    periodic["job_timeouts"] = leader("job_timeouts", settings.monitor_interval_s,
                                      jobs_.time_out_overdue)
    periodic["dispatch_refresh"] = Periodic("dispatch_refresh", DISPATCH_REFRESH_S,
                                            app[DISPATCHER].refresh)
    periodic["state_resync"] = Periodic("state_resync", settings.monitor_interval_s,
                                        partial(_resync_state, app))
    if app[TIMESCALEDB]:
        jobs = app[TIMESCALE_JOBS] = TimescaleJobs(app[PG_POOL])
        periodic["timescaledb_jobs"] = Periodic("timescaledb_jobs", TIMESCALE_JOBS_CHECK_S,
                                                jobs.refresh)
        app[METRICS].gauge("remotegpu_timescaledb_jobs_failing", "TimescaleDB jobs whose "
                           "last run failed", lambda: len(jobs.failing))
        app[METRICS].gauges("remotegpu_timescaledb_job_failed", "1 when the TimescaleDB job's "
                            "last run failed", "job", jobs.failed_by_job)
        with contextlib.suppress(*db.UNAVAILABLE_ERRORS):
            await jobs.refresh()
    else:
        maintenance = TelemetryMaintenance(
            app[PG_POOL], DirtyMinutes(app[REDIS], app[REDIS_KEYS]),
            retention_days=settings.retention_days)
        periodic["rollups"] = leader("rollups", settings.rollup_interval_s, maintenance.rollup)
        periodic["partitions"] = leader("partitions", PARTITION_INTERVAL_S,
                                        maintenance.partitions)
    for job in periodic.values():
        app[METRICS].counter(f"remotegpu_periodic_{job.name}_runs",
                             f"runs of the {job.name} job by this process",
                             lambda job=job: job.runs)
        job.start()
    yield
    await asyncio.gather(*(job.stop(app[SHUTDOWN].left(_PERIODIC_STOP_SHARE))
                           for job in periodic.values()))
