"""The app factory: the one place where storage objects are wired into services and the
HTTP layer. Tests build the app with this same function."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from importlib import metadata

import aiohttp_jinja2
import jinja2
from aiohttp import web

from api import (
    allocations,
    audit,
    auth,
    customer,
    customers,
    dashboard,
    docs,
    jobs,
    machines,
    ops,
)
from api.keys import (
    ALLOCATIONS,
    AUDIT,
    AUTH,
    CUSTOMERS,
    DASHBOARD,
    IMPORTS,
    JOBS,
    MACHINES,
    METRICS,
    OPENAPI,
    PERIODIC,
    PG_POOL,
    REDIS,
    REDIS_KEYS,
    SETTINGS,
    TENANT_MACHINES,
)
from api.metrics import HttpMetrics
from api.middlewares import audit as audit_middleware
from api.middlewares import authenticate, authorize, error_middleware, trace
from api.openapi import build_document
from api.routing import Routes, check_all_declared
from hub.periodic import LeaderLock, Periodic, lock_ttl
from services.accounts import sync_disabled_markers
from services.allocations import AllocationService
from services.audit import AuditTrail
from services.auth import AuthService
from services.customers import CustomerService
from services.dashboard import DashboardService
from services.imports import ImportService
from services.jobs import JobService
from services.machines import MachineService
from services.passwords import PasswordHasher
from services.settings import Settings
from services.tenant_machines import TenantMachineService
from services.tokens import AccessTokens
from storage import cache, db, roles
from storage.ratelimit import FailureCounter
from storage.revocations import Revocations

log = logging.getLogger(__name__)

RESOURCES: tuple[Routes, ...] = (
    auth.routes, machines.routes, allocations.routes, customers.routes, dashboard.routes,
    customer.routes, jobs.routes, audit.routes, ops.routes, docs.routes,
)
_POOL_CLOSE_TIMEOUT_S = 5.0


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
    app.cleanup_ctx.extend([_postgres, _redis, _services, _audit_trail, _periodic_jobs])
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
                                max_size=settings.db_pool_max)
    app[PG_POOL] = pool
    yield
    try:
        await asyncio.wait_for(pool.close(), _POOL_CLOSE_TIMEOUT_S)
    except TimeoutError:
        pool.terminate()


async def _redis(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    client = cache.create_client(settings.redis_url)
    app[REDIS] = client
    app[REDIS_KEYS] = cache.Keys(settings.redis_prefix)
    yield
    await client.aclose()


async def _services(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    pool, keys = app[PG_POOL], app[REDIS_KEYS]
    revocations = Revocations(app[REDIS], keys)
    await sync_disabled_markers(pool, revocations)
    hasher = PasswordHasher(time_cost=settings.argon2_time_cost,
                            memory_kib=settings.argon2_memory_kib)
    app[AUTH] = AuthService(
        pool=pool,
        revocations=revocations,
        failures=FailureCounter(app[REDIS]),
        keys=keys,
        hasher=hasher,
        access_tokens=AccessTokens(settings.jwt_secret, settings.access_token_ttl_s),
        permissions_by_role=await roles.permissions_by_role(pool),
        refresh_ttl_s=settings.refresh_token_ttl_s,
        login_max_failures=settings.login_max_failures,
        login_window_s=settings.login_window_s,
    )
    app[MACHINES] = MachineService(pool)
    app[IMPORTS] = ImportService(app[MACHINES], pool)
    app[ALLOCATIONS] = AllocationService(pool)
    app[JOBS] = JobService(pool, app[ALLOCATIONS])
    app[CUSTOMERS] = CustomerService(pool, hasher, revocations, settings.access_token_ttl_s)
    app[DASHBOARD] = DashboardService(pool)
    app[TENANT_MACHINES] = TenantMachineService(pool)
    yield
    hasher.close()


async def _audit_trail(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    trail = AuditTrail(app[PG_POOL], flush_interval_s=settings.audit_flush_interval_s,
                       queue_max=settings.audit_queue_max)
    app[AUDIT] = trail
    metrics = app[METRICS]
    metrics.gauge("remotegpu_audit_pending", "audit records waiting to be written",
                  lambda: trail.pending)
    metrics.counter("remotegpu_audit_dropped", "audit records dropped (queue full)",
                  lambda: trail.dropped)
    trail.start()
    yield
    await trail.close(settings.shutdown_grace_s)


async def _periodic_jobs(app: web.Application) -> AsyncIterator[None]:
    settings, keys = app[SETTINGS], app[REDIS_KEYS]
    interval = settings.lease_check_interval_s
    jobs = [
        Periodic("lease_expiry", interval, app[ALLOCATIONS].reclaim_expired,
                 LeaderLock(app[REDIS], keys.periodic_lock("lease_expiry"), lock_ttl(interval))),
    ]
    app[PERIODIC] = jobs
    for job in jobs:
        app[METRICS].counter(f"remotegpu_periodic_{job.name}_runs",
                             f"runs of the {job.name} job by this process",
                             lambda job=job: job.runs)
        job.start()
    yield
    for job in jobs:
        await job.stop()
