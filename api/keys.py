"""Every ``web.AppKey`` and ``web.RequestKey`` of the hub, in one place."""

from __future__ import annotations

import asyncpg
import redis.asyncio as redis
from aiohttp import web

from api.metrics import HttpMetrics
from services.audit import AuditTrail
from services.auth import AuthService, Principal
from services.settings import Settings
from storage.cache import Keys

SETTINGS = web.AppKey("settings", Settings)
PG_POOL = web.AppKey("pg_pool", asyncpg.Pool)
REDIS = web.AppKey("redis", redis.Redis)
REDIS_KEYS = web.AppKey("redis_keys", Keys)
AUTH = web.AppKey("auth", AuthService)
AUDIT = web.AppKey("audit", AuditTrail)
METRICS = web.AppKey("metrics", HttpMetrics)
OPENAPI = web.AppKey("openapi", dict)

TRACE_ID = web.RequestKey("trace_id", str)
PRINCIPAL = web.RequestKey("principal", Principal)
