"""Every ``web.AppKey`` and ``web.RequestKey`` of the hub, in one place."""

from __future__ import annotations

import asyncpg
import redis.asyncio as redis
from aiohttp import web

from api.metrics import HttpMetrics
from hub.periodic import Periodic
from services.allocations import AllocationService
from services.audit import AuditTrail
from services.auth import AuthService, Principal
from services.customers import CustomerService
from services.dashboard import DashboardService
from services.imports import ImportService
from services.jobs import JobService
from services.machines import MachineService
from services.settings import Settings
from services.tenant_machines import TenantMachineService
from storage.cache import Keys

SETTINGS = web.AppKey("settings", Settings)
PG_POOL = web.AppKey("pg_pool", asyncpg.Pool)
REDIS = web.AppKey("redis", redis.Redis)
REDIS_KEYS = web.AppKey("redis_keys", Keys)
AUTH = web.AppKey("auth", AuthService)
AUDIT = web.AppKey("audit", AuditTrail)
MACHINES = web.AppKey("machines", MachineService)
IMPORTS = web.AppKey("imports", ImportService)
ALLOCATIONS = web.AppKey("allocations", AllocationService)
JOBS = web.AppKey("jobs", JobService)
CUSTOMERS = web.AppKey("customers", CustomerService)
DASHBOARD = web.AppKey("dashboard", DashboardService)
TENANT_MACHINES = web.AppKey("tenant_machines", TenantMachineService)
PERIODIC = web.AppKey("periodic", list[Periodic])
METRICS = web.AppKey("metrics", HttpMetrics)
OPENAPI = web.AppKey("openapi", dict)

TRACE_ID = web.RequestKey("trace_id", str)
PRINCIPAL = web.RequestKey("principal", Principal)
