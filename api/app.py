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

from api import audit, auth, docs, ops
from api.keys import (
    AUDIT,
    AUTH,
    METRICS,
    OPENAPI,
    PG_POOL,
    REDIS,
    REDIS_KEYS,
    SETTINGS,
)
from api.metrics import HttpMetrics
from api.middlewares import audit as audit_middleware
from api.middlewares import authenticate, authorize, error_middleware, trace
from api.openapi import build_document
from api.routing import Routes, check_all_declared
from services.accounts import sync_disabled_markers
from services.audit import AuditTrail
from services.auth import AuthService
from services.passwords import PasswordHasher
from services.settings import Settings
from services.tokens import AccessTokens
from storage import cache, db, roles
from storage.ratelimit import FailureCounter
from storage.revocations import Revocations

log = logging.getLogger(__name__)

RESOURCES: tuple[Routes, ...] = (auth.routes, audit.routes, ops.routes, docs.routes)
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
    app.cleanup_ctx.extend([_postgres, _redis, _auth, _audit_trail])
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


async def _auth(app: web.Application) -> AsyncIterator[None]:
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
